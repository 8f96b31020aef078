# The original Conjuring's JupyterHub settings, loaded after conjuringd's own configuration
# (tests/bench/classroom.py's "baseline"): JupyterHub's default spawner timeouts and spawn
# limit, no idle culler, no per-user limits, no prewarm. Same image, same accounts.
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"  # JupyterHub default
c.Spawner.start_timeout = 60  # JupyterHub default
c.Spawner.http_timeout = 30  # JupyterHub default
c.JupyterHub.concurrent_spawn_limit = 100  # JupyterHub default
c.JupyterHub.active_server_limit = 0  # JupyterHub default: no limit
c.Spawner.mem_limit = None
c.Spawner.cpu_limit = None
c.JupyterHub.services = [s for s in c.JupyterHub.services if s.get("name") != "idle-culler"]
c.JupyterHub.load_roles = [r for r in c.JupyterHub.load_roles if r.get("name") != "idle-culler"]
