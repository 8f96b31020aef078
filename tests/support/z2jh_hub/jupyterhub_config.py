"""The stand-in for the chart's hub pod: chart.json is what the test read from the exported values.yaml."""

import json

chart = json.load(open("/srv/hub/chart.json"))
# hub.config: traitlets configuration, class by class, as the chart applies it
for cls, traits in chart["config"].items():
    for trait, value in traits.items():
        setattr(getattr(c, cls), trait, value)  # noqa: F821 (c is the config object JupyterHub gives)
c.JupyterHub.spawner_class = "handoff_spawner.HandoffSpawner"  # noqa: F821
c.JupyterHub.bind_url = "http://:8000"  # noqa: F821
c.JupyterHub.hub_ip = "0.0.0.0"  # noqa: F821 (the chart's hub listens on all interfaces)
c.JupyterHub.hub_connect_url = chart["hub_connect_url"]  # noqa: F821
c.JupyterHub.cleanup_servers = False  # noqa: F821
# singleuser.*, as the chart hands them to KubeSpawner (its ip and port: 0.0.0.0:8888)
c.Spawner.cmd = chart["cmd"]  # noqa: F821
c.Spawner.default_url = chart["default_url"]  # noqa: F821
c.Spawner.mem_limit = chart["mem_limit"]  # noqa: F821
c.Spawner.cpu_limit = chart["cpu_limit"]  # noqa: F821
c.Spawner.start_timeout = chart["start_timeout"]  # noqa: F821
c.Spawner.http_timeout = 120  # noqa: F821
c.Spawner.ip = "0.0.0.0"  # noqa: F821
c.Spawner.port = 8888  # noqa: F821
# hub.extraConfig, each snippet run in this file's namespace, as the chart's jupyterhub_config.py runs them
for name in sorted(chart["extra_config"]):
    exec(chart["extra_config"][name])
