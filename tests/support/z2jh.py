"""A stand-in for what the Zero to JupyterHub chart runs, on plain dockerd: no Kubernetes here.

- the hub: a container of the exported single-user image plus Debian's configurable-http-proxy
  (the chart runs JupyterHub and the proxy in pods of their own images), configured from the
  exported values.yaml: hub.config, hub.extraConfig (the exported authenticator), singleuser.cmd,
  limits, and hub.extraEnv resolved from users-secret.yaml (what the kubelet does for secretKeyRef);
- its spawner (z2jh_hub/handoff_spawner.py) hands the pod's command and environment to `Kubelet`,
  which runs the exported image with them as the chart's pod spec says: uid 1000, group 100 and
  fsGroup 100, no privilege escalation, the limits, an empty home volume at homeMountPath owned by
  the fsGroup, and then the postStart hook's command in the running container.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import yaml

from tests.support.docker import DOCKER

HUB_FILES = Path(__file__).parent / "z2jh_hub"


def docker(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=check, timeout=timeout)


def chart_json(values: dict, hub_host: str) -> dict:
    single = values["singleuser"]
    cmd = single["cmd"]
    return {
        "config": values["hub"]["config"], "extra_config": values["hub"]["extraConfig"],
        "cmd": [cmd] if isinstance(cmd, str) else cmd, "default_url": single["defaultUrl"],
        "mem_limit": (single.get("memory") or {}).get("limit"), "cpu_limit": (single.get("cpu") or {}).get("limit"),
        "start_timeout": single["startTimeout"], "hub_connect_url": f"http://{hub_host}:8081",
    }


def secret_env(values: dict, secret: dict) -> dict[str, str]:
    """hub.extraEnv with every secretKeyRef read from the Secret manifest (what the kubelet does)."""
    env = {}
    for name, spec in values["hub"]["extraEnv"].items():
        ref = spec["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], ref
        env[name] = secret["stringData"][ref["key"]]
    return env


class Kubelet(threading.Thread):
    """Starts a user's server container when the hub's spawner hands over its command and environment."""

    def __init__(self, root: Path, prefix: str, network: str, values: dict):
        super().__init__(daemon=True)
        self.handoff, self.prefix, self.network, self.values = root / "handoff", prefix, network, values
        self.homes = root / "homes"
        self.started: dict[str, dict] = {}  # user -> the spec it was started with
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for spec_file in sorted(self.handoff.glob("*.json")):
                user = spec_file.stem
                spec = json.loads(spec_file.read_text())
                spec_file.unlink()
                try:
                    self.ready(user, self.run_server(user, spec))
                except subprocess.CalledProcessError as exc:  # a failed postStart hook kills the pod, too
                    self.errors.append(f"{user}: {exc.cmd[:3]}... {exc.stderr}")
                    docker("rm", "-f", f"{self.prefix}-{user}", check=False)
                    (self.handoff / f"{user}.failed").write_text(exc.stderr or "failed")
            for stop in sorted(self.handoff.glob("*.stop")):  # the pod is deleted; its volume stays
                docker("rm", "-f", f"{self.prefix}-{stop.stem}", check=False)
                stop.unlink()
            time.sleep(0.3)

    def run_server(self, user: str, spec: dict) -> str:
        single = self.values["singleuser"]
        home = self.homes / user
        home.mkdir(parents=True, exist_ok=True)
        # a new PersistentVolume: empty, its root group-owned by fsGroup and setgid
        subprocess.run(["chown", f"0:{single['fsGid']}", str(home)], check=True)
        home.chmod(0o2775)
        name = f"{self.prefix}-{user}"
        docker("rm", "-f", name, check=False)
        image = f"{single['image']['name']}:{single['image']['tag']}"
        args = ["run", "-d", "--name", name, "--network", self.network,
                "--user", f"{single['uid']}:{single['fsGid']}", "--group-add", str(single["fsGid"]),
                "--security-opt", "no-new-privileges", "-v", f"{home}:{single['storage']['homeMountPath']}"]
        if single.get("memory", {}).get("limit"):
            args += ["--memory", str(single["memory"]["limit"])]
        if single.get("cpu", {}).get("limit"):
            args += ["--cpus", str(single["cpu"]["limit"])]
        for key, value in spec["env"].items():
            args += ["-e", f"{key}={value}"]
        docker(*args, image, *spec["args"])
        self.started[user] = spec
        docker("exec", name, *single["lifecycleHooks"]["postStart"]["exec"]["command"])
        return f"http://{name}:8888"

    def ready(self, user: str, url: str) -> None:
        tmp = self.handoff / f"{user}.tmp-ready"
        tmp.write_text(url)
        tmp.rename(self.handoff / f"{user}.ready")


def hub_image(single_image: str, tag: str) -> None:
    """The exported image plus Debian's proxy: the stand-in for the chart's hub and proxy images."""
    dockerfile = (f"FROM {single_image}\nUSER root\nRUN apt-get update && apt-get install -y --no-install-recommends "
                  "node-configurable-http-proxy && rm -rf /var/lib/apt/lists/*\n")
    subprocess.run([DOCKER, "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, capture_output=True,
                   check=True, timeout=1800)


def start_hub(root: Path, name: str, network: str, image: str, port: int, outdir: Path) -> None:
    values = yaml.safe_load((outdir / "values.yaml").read_text())
    secret = yaml.safe_load((outdir / "users-secret.yaml").read_text())
    hub_dir = root / "hub"
    hub_dir.mkdir()
    (root / "handoff").mkdir()
    for path in HUB_FILES.glob("*.py"):
        (hub_dir / path.name).write_bytes(path.read_bytes())
    (hub_dir / "chart.json").write_text(json.dumps(chart_json(values, name)))
    single = values["singleuser"]["image"]
    args = ["run", "-d", "--name", name, "--network", network, "-p", f"127.0.0.1:{port}:8000",
            "-v", f"{hub_dir}:/srv/hub:ro", "-v", f"{root / 'handoff'}:/srv/handoff", "-w", "/tmp",
            "-e", "PYTHONPATH=/srv/hub", "-e", f"SINGLEUSER_IMAGE={single['name']}:{single['tag']}"]
    for key, value in secret_env(values, secret).items():
        args += ["-e", f"{key}={value}"]
    docker(*args, "--entrypoint", "jupyterhub", image, "-f", "/srv/hub/jupyterhub_config.py")
