"""The captive-portal rig: the box (real NetworkManager in its netns, conjuringd's network adapter
running inside it) and a client in a second netns on the other end of the veth pair.

    client netns                 box netns (NetworkManager, its dnsmasq, CaptiveNetwork)
    veth0 (DHCP, udhcpc)  <--->  veth1 (ethernet profile, ipv4.method=shared -> 10.42.0.1)

Neither namespace has any other interface or route: whatever the client sends can only reach the
box. The one way out of the box netns is test plumbing to the real hub container: socat on
10.42.0.1:8989 inside it, joined through a unix socket (a path reaches across namespaces) to a socat
on the host that connects to the hub's published port. The box's port 80 and DNS are the product's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.nm import unavailable

CLIENT_HOLDER = """
set -e
ip link set lo up
echo ready
exec sleep infinity
"""

# udhcpc calls this with the lease in its environment; it only writes it down (the test applies it)
UDHCPC_SCRIPT = """#!/bin/sh
if [ "$1" = bound ] || [ "$1" = renew ]; then
  printf '{"ip": "%s", "mask": "%s", "router": "%s", "dns": "%s", "interface": "%s"}\\n' \\
    "$ip" "$mask" "$router" "$dns" "$interface" > "$LEASE_FILE"
fi
"""

ROOT = Path(__file__).resolve().parents[2]


def require_rig_tools() -> None:
    for tool in ("dnsmasq", "busybox", "socat", "curl", "getent"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            unavailable(f"{tool} is not installed (.ci/install-deps.sh installs it)")


class Netns:
    """A process holding a mount + network namespace; run() enters both."""

    def __init__(self, name: str):
        self.name = name
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Netns":
        self.proc = subprocess.Popen(["unshare", "-m", "-n", "--propagation", "private", "bash", "-c", CLIENT_HOLDER],
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"could not make the {self.name} namespace")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self, *command: str, mount: bool = True) -> list[str]:
        return ["nsenter", "-t", str(self.pid), *(["-m"] if mount else []), "-n", *command]

    def run(self, *command: str, check: bool = True, timeout: float = 30, mount: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(self.argv(*command, mount=mount), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def dhcp(client: Netns, workdir: Path, interface: str = "veth0") -> dict:
    """A DHCP lease from whatever answers on `interface` (udhcpc), applied to the interface; its
    DNS server becomes the client's only resolver (resolv.conf and nsswitch bound in its mount ns)."""
    script = workdir / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    lease_file = workdir / "lease.json"
    client.run("ip", "link", "set", interface, "up")
    client.run("env", f"LEASE_FILE={lease_file}", "busybox", "udhcpc", "-i", interface, "-f", "-q", "-n",
               "-t", "20", "-T", "1", "-A", "1", "-s", str(script), timeout=60)
    lease = json.loads(lease_file.read_text())
    client.run("ip", "addr", "add", f"{lease['ip']}/{lease['mask']}", "dev", interface)
    if lease["router"]:
        client.run("ip", "route", "add", "default", "via", lease["router"].split()[0])
    (workdir / "resolv.conf").write_text("".join(f"nameserver {d}\n" for d in lease["dns"].split()))
    (workdir / "nsswitch.conf").write_text("hosts: dns\n")  # like a phone: only the DHCP-given server
    client.run("mount", "--bind", str(workdir / "resolv.conf"), "/etc/resolv.conf")
    client.run("mount", "--bind", str(workdir / "nsswitch.conf"), "/etc/nsswitch.conf")
    return lease


class HubForward:
    """<address>:<port> inside the box netns -> the hub container's published port on the host."""

    def __init__(self, box_pid: int, workdir: Path, address: str, port: int, host_port: int):
        self.socket = workdir / "hub.sock"
        self.host = subprocess.Popen(["socat", f"UNIX-LISTEN:{self.socket},fork,mode=600",
                                      f"TCP:127.0.0.1:{host_port}"], stderr=subprocess.DEVNULL)
        self.box = subprocess.Popen(["nsenter", "-t", str(box_pid), "-n", "socat",
                                     f"TCP-LISTEN:{port},bind={address},fork,reuseaddr",
                                     f"UNIX-CONNECT:{self.socket}"], stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        for proc in (self.box, self.host):
            proc.terminate()
            proc.wait(timeout=10)


class Box:
    """tests/support/captive_box.py in the box netns: conjuringd's CaptiveNetwork brings up `serve`."""

    def __init__(self, box_pid: int, bus_address: str, dropins: Path, serve: str, hub_port: int, portal: bool = True):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(box_pid), "-n", sys.executable, "-m", "tests.support.captive_box",
             bus_address, str(dropins), serve, str(hub_port), *([] if portal else ["off"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)

    def ready(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the box did not come up:\n{self.proc.stderr.read()}")
        return json.loads(line)

    def stop(self) -> str:
        """Stop it; its log (stderr)."""
        try:
            _, err = self.proc.communicate("", timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err
