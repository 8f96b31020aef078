"""Two real avahi-daemons that talk mDNS over a veth pair, each on a private system bus of its own.

Side "a" (the box: 10.77.0.1 on cmdA) and side "b" (a student's laptop: 10.77.0.2 on cmdB)
live in two network namespaces (`ip netns`, unique names conj-mdns-<pid>-a/b). Each side has a
dbus-daemon on a filesystem socket (reachable from any namespace) and an avahi-daemon running
inside its namespace, with /run/avahi-daemon on a private tmpfs (its pid file and socket) and a
configuration of our own (IPv4 only, that one interface, no rlimits, D-Bus on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.support.nm import PrivateSystemBus, unavailable

ADDRESSES = {"a": "10.77.0.1", "b": "10.77.0.2"}
INTERFACES = {"a": "cmdA", "b": "cmdB"}

AVAHI_CONF = """[server]
host-name=laptop-{side}
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-hinfo=no
publish-workstation=no

[reflector]

[rlimits]
"""

RUN_AVAHI = ("mkdir -p /run/avahi-daemon && mount -t tmpfs avahi /run/avahi-daemon && "
             "exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits --no-proc-title")


TOOLS = ("avahi-daemon", "avahi-resolve", "avahi-browse", "dbus-daemon", "ip", "unshare")


def require_avahi() -> None:
    if os.geteuid() != 0:
        unavailable("needs root for network namespaces")
    search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [tool for tool in TOOLS if shutil.which(tool, path=search) is None]
    if missing:
        unavailable(f"not installed: {', '.join(missing)} (.ci/install-deps.sh installs avahi-daemon and avahi-utils)")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class AvahiPair:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.ns = {side: f"conj-mdns-{os.getpid()}-{side}" for side in "ab"}
        self.buses: dict[str, PrivateSystemBus] = {}
        self.avahi: dict[str, subprocess.Popen] = {}

    def start(self) -> "AvahiPair":
        for side in "ab":
            _ip("netns", "add", self.ns[side])
            _ip("-n", self.ns[side], "link", "set", "lo", "up")
        _ip("link", "add", "cmdA", "netns", self.ns["a"], "type", "veth", "peer", "name", "cmdB", "netns", self.ns["b"])
        for side in "ab":
            _ip("-n", self.ns[side], "addr", "add", ADDRESSES[side] + "/24", "dev", INTERFACES[side])
            _ip("-n", self.ns[side], "link", "set", INTERFACES[side], "up")
            folder = self.dir / side
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "avahi.conf").write_text(AVAHI_CONF.format(side=side, interface=INTERFACES[side]))
            self.buses[side] = PrivateSystemBus(folder).start()
        for side in "ab":
            self.start_avahi(side)
        return self

    def bus(self, side: str) -> str:
        return self.buses[side].address

    def env(self, side: str) -> dict:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus(side)}

    def netns_exec(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side]]

    def start_avahi(self, side: str, bus: str | None = None) -> None:
        """Start side's avahi-daemon (on `bus` if given) and wait until it runs."""
        conf = self.dir / side / "avahi.conf"
        seen = len(self.log(side))  # only what this start writes counts
        log = open(self.dir / side / "avahi.log", "ab")
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus or self.bus(side)}
        argv = [*self.netns_exec(side), "unshare", "-m", "--propagation", "private", "sh", "-c",
                RUN_AVAHI.format(conf=conf)]
        self.avahi[side] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while "Server startup complete" not in self.log(side)[seen:]:
            if time.monotonic() > deadline or self.avahi[side].poll() is not None:
                raise RuntimeError(f"avahi-daemon ({side}) did not start:\n{self.log(side)[-2000:]}")
            time.sleep(0.05)

    def stop_avahi(self, side: str) -> None:
        proc = self.avahi.pop(side, None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)

    def log(self, side: str) -> str:
        path = self.dir / side / "avahi.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def resolve(self, name: str, side: str = "b", timeout: float = 10) -> str:
        """The IPv4 address `side` resolves `name` to over mDNS ("" if it does not resolve)."""
        done = subprocess.run(["avahi-resolve", "-4", "-n", name], env=self.env(side), capture_output=True,
                              text=True, timeout=timeout + 10)
        fields = done.stdout.split()
        return fields[1] if done.returncode == 0 and len(fields) == 2 and fields[0] == name else ""

    def resolve_until(self, name: str, want: str, timeout: float = 20, side: str = "b") -> str:
        deadline = time.monotonic() + timeout
        got = ""
        while time.monotonic() < deadline:
            got = self.resolve(name, side, timeout=3)
            if got == want:
                return got
            time.sleep(0.2)
        return got

    def forgotten(self, name: str, timeout: float = 15, side: str = "b") -> bool:
        """True once `side` no longer resolves `name` (goodbye packets: its cache drops it about 1 s later)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.resolve(name, side, timeout=2) == "":
                return True
            time.sleep(0.5)
        return False

    def browse_http(self, side: str = "b") -> list[list[str]]:
        """Resolved `_http._tcp` services seen from `side`: avahi-browse -p fields of each '=' line."""
        done = subprocess.run(["avahi-browse", "-rtp", "_http._tcp"], env=self.env(side), capture_output=True,
                              text=True, timeout=30)
        return [line.split(";") for line in done.stdout.splitlines() if line.startswith("=")]

    def stop(self) -> None:
        for side in list(self.avahi):
            self.stop_avahi(side)
        for bus in self.buses.values():
            bus.stop()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
