"""A Debian container that boots systemd (RECIPES.md), driven with `docker exec`.

The image is the locally bootstrapped base plus systemd, dbus and the
package's dependencies, cached under a fixed tag. It runs without
--privileged: the host's cgroup tree read-only, tmpfs on /run and /run/lock.
The host's Docker socket is mounted so the daemon inside drives the host's
dockerd, the host's network is shared so 127.0.0.1 means the same on both
sides, and the state folder is bind-mounted at the same path on both sides
because dockerd resolves bind-mount sources on the host.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.docker import BASE_TAG, DOCKER

IMAGE = "local/conjuring-systemd:bookworm"
# systemd, and the one heavy dependency (docker.io, never started inside).
# The package's other dependencies are left to `apt-get install ./x.deb`, so a
# Depends: the daemon needs but the package lacks makes the test fail.
DEPENDENCIES = "systemd systemd-sysv dbus python3 docker.io"
DOCKERFILE = f"""FROM {BASE_TAG}
ENV container=docker DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends {DEPENDENCIES} >/dev/null \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
# No getty, logind or udevd in a container; the host's dockerd is used, not one inside.
RUN systemctl mask getty@tty1.service console-getty.service systemd-logind.service \\
      systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \\
      docker.service docker.socket containerd.service
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
"""


def docker(*args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=check, timeout=timeout, **kw)


def build_image() -> str:
    """Build (or reuse from the layer cache) the systemd image under its fixed tag."""
    result = subprocess.run([DOCKER, "build", "-q", "-t", IMAGE, "-"], input=DOCKERFILE, capture_output=True,
                            text=True, timeout=1200)
    if result.returncode != 0:
        raise AssertionError(f"building {IMAGE} failed:\n{result.stderr[-3000:]}")
    return IMAGE


@dataclass
class Box:
    name: str
    timings: dict[str, float] = field(default_factory=dict)
    install_log: str = ""

    @classmethod
    def start(cls, name: str, mounts: list[tuple[str, str, str]]) -> "Box":
        docker("rm", "-f", name, check=False)
        # Host network: the daemon checks the hub at 127.0.0.1:<published port>,
        # as it does on a real box.
        args = ["run", "-d", "--name", name, "--network", "host",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--tmpfs", "/run", "--tmpfs", "/run/lock"]
        for source, target, mode in mounts:
            args += ["-v", f"{source}:{target}:{mode}"]
        docker(*args, IMAGE)
        box = cls(name)
        box.wait_for(lambda: box.sh("systemctl is-system-running", check=False).stdout.strip()
                     in ("running", "degraded"), 60, "systemd to boot")
        return box

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)

    def sh(self, command: str, check: bool = True, user: str | None = None, timeout: float = 300,
           stdin: str | None = None) -> subprocess.CompletedProcess:
        args = ["exec", "-i"] + (["-u", user] if user else []) + [self.name, "sh", "-c", command]
        result = docker(*args, check=False, timeout=timeout, input=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"`{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def write(self, path: str, content: str) -> None:
        self.sh(f"mkdir -p $(dirname {path}) && cat > {path}", stdin=content)

    def prop(self, unit: str, name: str) -> str:
        return self.sh(f"systemctl show -P {name} {unit}").stdout.strip()

    def journal(self, unit: str = "conjuringd", pid: str = "") -> str:
        """The unit's messages; only process `pid`'s if given."""
        match = f"_PID={pid}" if pid else f"-u {unit}"
        return self.sh(f"journalctl {match} -o cat --no-pager").stdout

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 0.25):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def stage(self, name: str, started: float) -> None:
        self.timings[name] = time.monotonic() - started
