"""One hub container per classroom configuration, and what its cgroup (v1 or v2) says about CPU and memory.

The container is made from the same image and the same run-time files as the
daemon's (DockerHub builds the image and writes the mounted files), but under its
own name and port, so a benchmark never touches the daemon's or another test's
`conjuring` container.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from conjuringd.adapters import hub_http
from conjuringd.adapters.docker import DockerHub
from conjuringd.adapters.docker_labels import CONTAINER_PORT, image_tag
from conjuringd.config.model import HubSettings
from conjuringd.paths import Paths
from tests.support.hubconfig import desired, make_config

CONFIGS = Path(__file__).parent / "classroom_configs"
REQUIREMENTS = b"numpy\n"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Variant:
    """A hub configuration to compare: its srv/ override, its hub settings, and whether conjuringd prewarms."""

    name: str
    override: str  # folder under classroom_configs/ holding srv/jupyterhub_config.py ("" = none)
    settings: dict
    prewarm: bool = False


VARIANTS = {
    # the original Conjuring: JupyterHub's defaults (start 60 s, http 30 s, spawn limit 100), no culler, no limits
    "baseline": Variant("baseline", "baseline", {"idle_timeout": 0}),
    "ours": Variant("ours", "ours", {}),
    "prewarm": Variant("ours+prewarm", "ours", {}, prewarm=True),
    # and the class's library imported once in the fork server ([hub] preload), so the first cell's import is free
    "preload": Variant("+preload numpy", "ours", {"preload": ("numpy",)}, prewarm=True),
}


def students(n: int) -> list[tuple[str, str, bool]]:
    return [(f"s{i:02d}", f"pw-s{i:02d}-classroom", False) for i in range(1, n + 1)]


def variant_config(root: Path, variant: Variant, n: int, port: int):
    custom = root / "custom"
    (custom / "shared").mkdir(parents=True, exist_ok=True)
    (custom / "home_default").mkdir(exist_ok=True)
    override = CONFIGS / variant.override / "srv" / "jupyterhub_config.py" if variant.override else None
    hub_config = override.read_bytes() if override and override.is_file() else b""
    users = students(n) + [("teacher", "pw-teacher-classroom", True)]
    hub = HubSettings(port=port, health_timeout=180, **variant.settings)
    return make_config(custom, users=users, requirements=REQUIREMENTS, hub_config=hub_config, hub=hub)


class BenchHub:
    """Builds (if needed) and runs one variant's hub as container `name` on `port`."""

    def __init__(self, root: Path, name: str, port: int):
        self.root, self.name, self.port = root, name, port
        self.base = f"http://127.0.0.1:{port}"
        self.client = docker.from_env(timeout=900)
        self.container = None

    def start(self, variant: Variant, n: int, image: str = "") -> None:
        self.remove()
        work = self.root / variant.override / str(n)
        config = variant_config(work, variant, n, self.port)
        want = desired(config)
        self.hub = DockerHub(Paths(state_dir=work / "state", config_dir=work / "etc", runtime_dir=work / "run"))
        tag = image or image_tag(want.hashes.image)
        if not image and want.hashes.image not in asyncio.run(self.hub.observe()).images:
            asyncio.run(self.hub.build_image(want, lambda line: None))
        volumes = self.hub._prepare(want)  # the daemon's own run-time files and mounts
        self.token = (self.hub.secrets_dir / "service-token").read_text().strip()
        self.container = self.client.containers.run(
            tag, name=self.name, init=True, detach=True, volumes=volumes,
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", self.port)}, labels={"org.conjuring.bench": "classroom"},
        )
        self.wait_healthy(want.config.settings.hub.health_timeout)
        self.cgroup = Cgroup(self.container.id)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.container.reload()
            if self.container.status not in ("created", "running"):
                raise RuntimeError(f"hub container {self.container.status}: {self.container.logs(tail=20).decode()}")
            if hub_http.health(self.base, timeout=2):
                return
            time.sleep(0.5)
        raise RuntimeError(f"hub did not answer in {timeout}s: {self.container.logs(tail=20).decode()}")

    def wait_idle(self, timeout: float = 60, busy: float = 0.05) -> float:
        """Wait until the container uses under `busy` CPU-seconds per second (class starts on a quiet hub,
        as it does after prewarm in a real morning); returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            before = self.cgroup.cpu_seconds()
            time.sleep(1)
            if self.cgroup.cpu_seconds() - before < busy:
                break
        return time.monotonic() - started

    def processes(self) -> list[tuple[int, str]]:
        """(host pid, command line) of every process in the container."""
        top = self.container.top(ps_args="-eo pid,args")
        return [(int(row[0]), row[1]) for row in top["Processes"]]

    def hub_pids(self) -> dict[str, int]:
        """Host pids of the hub and the proxy."""
        found = {}
        for pid, args in self.processes():
            if "jupyterhub -f" in args or args.endswith("/jupyterhub"):
                found.setdefault("hub", pid)
            elif "configurable-http-proxy" in args or "configurable_http_proxy" in args:
                found.setdefault("proxy", pid)
        return found

    def remove(self) -> None:
        try:
            self.client.containers.get(self.name).remove(force=True)
        except docker.errors.NotFound:
            pass
        self.container = None

    def logs(self, tail: int = 50) -> str:
        return self.container.logs(tail=tail).decode("utf-8", "replace") if self.container else ""


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a host process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _proc_kib_field(pid: int, file: str, field: str) -> int:
    """A "<field>: <n> kB" line of /proc/<pid>/<file>, in bytes (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_rss(pid: int) -> int:
    """Resident set size of a host process in bytes (0 when it is gone)."""
    return _proc_kib_field(pid, "status", "VmRSS")


def proc_pss(pid: int) -> int:
    """Proportional set size of a host process in bytes: shared pages count in part (0 when it is gone)."""
    return _proc_kib_field(pid, "smaps_rollup", "Pss")


def proc_uid(pid: int) -> int:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return -1


class Cgroup:
    """CPU and memory of a container from its cgroup (v1 cgroupfs driver or v2)."""

    def __init__(self, container_id: str):
        v1 = Path("/sys/fs/cgroup/cpuacct/docker") / container_id
        if v1.is_dir():
            self.cpu_file, self.mem_dir, self.v2 = v1 / "cpuacct.usage", Path("/sys/fs/cgroup/memory/docker") / container_id, False
        else:
            cands = [Path("/sys/fs/cgroup/system.slice") / f"docker-{container_id}.scope", Path("/sys/fs/cgroup/docker") / container_id]
            self.mem_dir = next((p for p in cands if p.is_dir()), cands[0])
            self.cpu_file, self.v2 = self.mem_dir / "cpu.stat", True

    def cpu_seconds(self) -> float:
        text = self.cpu_file.read_text()
        if not self.v2:
            return int(text) / 1e9
        usage = dict(line.split() for line in text.splitlines())
        return int(usage["usage_usec"]) / 1e6

    def memory(self) -> int:
        name = "memory.current" if self.v2 else "memory.usage_in_bytes"
        return int((self.mem_dir / name).read_text())

    def anon(self) -> int:
        """Anonymous memory (what processes really hold, without page cache)."""
        stat = dict(line.split() for line in (self.mem_dir / "memory.stat").read_text().splitlines())
        return int(stat["anon"] if self.v2 else stat.get("total_rss", stat.get("rss", 0)))

    def reset_peak(self) -> bool:
        if self.v2:
            return False
        try:
            (self.mem_dir / "memory.max_usage_in_bytes").write_text("0")
            return True
        except OSError:
            return False

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int((self.mem_dir / name).read_text())
        except OSError:
            return 0
