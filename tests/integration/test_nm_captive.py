"""The captive portal end to end: real NetworkManager, its own dnsmasq, a DHCP client, the real hub.

The box is the netns rig's NetworkManager with an ethernet profile (veth1) in shared mode, so
NetworkManager starts its dnsmasq for DHCP and DNS; conjuringd's CaptiveNetwork writes the drop-in
and activates the profile, then serves port 80 (tests/support/captive_box.py, inside the box netns).
The client, in a second netns on veth0, gets its address and DNS server by DHCP (busybox udhcpc) and
resolves with nothing but that server. The hub is the real JupyterHub container (tests/support
/hubworld.py), reached at 10.42.0.1:8989 in the box netns through a socat pair (test plumbing: on a
real box the hub publishes that port itself). Needs root, NetworkManager, dnsmasq, docker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from pathlib import Path

import pytest
from dbus_next import Variant

from conjuringd import captive
from tests.support.captive_rig import Box, HubForward, Netns, dhcp, require_rig_tools
from tests.support.daemon import Daemon
from tests.support.docker import require_docker
from tests.support.hubworld import World, remove_hub_containers
from tests.support.nm import NMClient, PrivateSystemBus, RealNetworkManager, require_real_nm

pytestmark = [pytest.mark.nm, pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-captive", 18983  # the hub container of this module, published on the host
HUB_PORT = 8989  # the hub's port on the box, as students see it
BOX = "10.42.0.1"  # NetworkManager's address for a shared profile without ipv4.addresses
LOGIN = f"http://{BOX}:{HUB_PORT}/hub/login"
PROBES = ("http://connectivitycheck.gstatic.com/generate_204", "http://captive.apple.com/hotspot-detect.html",
          "http://www.msftconnecttest.com/connecttest.txt", "http://www.msftncsi.com/ncsi.txt")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    require_docker()
    remove_hub_containers(NAME)
    world = World(tmp_path_factory.mktemp("captive-hub"), name=NAME, port=PORT)
    asyncio.run(world.converge())
    yield world
    asyncio.run(world.hub.close())
    remove_hub_containers(NAME)


def shared_ethernet(conn_id: str, interface: str) -> dict:
    return {
        "connection": {"id": Variant("s", conn_id), "uuid": Variant("s", str(uuid.uuid4())),
                       "type": Variant("s", "802-3-ethernet"), "interface-name": Variant("s", interface),
                       "autoconnect": Variant("b", False)},
        "ipv4": {"method": Variant("s", "shared")},
        "ipv6": {"method": Variant("s", "ignore")},
    }


@pytest.fixture
async def rig(tmp_path):
    require_real_nm()
    require_rig_tools()
    client = Netns("client").start()
    dropins = tmp_path / "dnsmasq-shared.d"
    dropins.mkdir()
    bus = PrivateSystemBus(tmp_path).start()
    nm = RealNetworkManager(bus, tmp_path, extra_setup=(
        f"mount --bind {dropins} /etc/NetworkManager/dnsmasq-shared.d\n"  # the folder NetworkManager's dnsmasq reads
        f"ip link set veth0 netns {client.pid}"))  # the client end leaves the box
    try:
        nm.start()
        async with NMClient(bus.address) as nmc:
            await nmc.add_connection(shared_ethernet("classroom", "veth1"))
        nm.client, nm.dropins, nm.workdir = client, dropins, tmp_path
        yield nm
    finally:
        nm.stop()
        bus.stop()
        client.stop()


def box_run(rig, *command: str, check: bool = True):
    box = Netns("box")
    box.proc = rig.holder  # the NetworkManager holder: its netns is the box's
    return box.run(*command, check=check, mount=False)


async def test_a_client_on_the_hotspot_resolves_every_name_to_the_box_and_lands_on_the_hub_login(rig, hub):
    box = Box(rig.holder.pid, rig.bus.address, rig.dropins, "classroom", HUB_PORT)
    forward = None
    try:
        up = box.ready()
        assert up["state"] == "activated" and captive.ipv4_of(tuple(up["addresses"])) == (BOX,), up
        assert up["http"] == BOX
        assert (rig.dropins / captive.DROPIN_NAME).read_text() == captive.dropin_text(BOX)
        dnsmasq = _dnsmasq_in(rig.holder.pid)  # NetworkManager's own, started for the shared profile
        assert "--conf-dir=/etc/NetworkManager/dnsmasq-shared.d" in dnsmasq and f"--listen-address={BOX}" in dnsmasq
        forward = HubForward(rig.holder.pid, rig.workdir, BOX, HUB_PORT, PORT)

        lease = dhcp(rig.client, rig.workdir)
        assert lease["ip"].startswith("10.42.0.") and lease["ip"] != BOX, lease
        assert lease["dns"].split() == [BOX] and lease["router"].split() == [BOX], lease

        for name in ("conjuring.local", "anything.test", "connectivitycheck.gstatic.com"):
            answer = rig.client.run("getent", "ahostsv4", name).stdout.split()
            assert answer[0] == BOX, (name, answer)

        body = rig.workdir / "landing.html"
        done = rig.client.run("curl", "-sS", "-L", "--max-redirs", "3", "--max-time", "60", "-o", str(body),
                              "-w", "%{url_effective} %{http_code} %{num_redirects}", "http://anything.test/",
                              timeout=90)
        assert done.stdout.split() == [LOGIN, "200", "1"], done.stdout
        page = body.read_text()
        assert "JupyterHub" in page and 'name="username"' in page and 'name="password"' in page

        for probe in PROBES:  # what Android, Apple and Windows ask right after joining
            done = rig.client.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", probe)
            assert done.stdout.split() == ["302", LOGIN], (probe, done.stdout)

        # the traffic stays between the two namespaces: no other interface, no route anywhere else
        assert _links(rig.client.run("ip", "-o", "link").stdout) == ["lo", "veth0"]
        assert f"via {BOX} dev veth0" in rig.client.run("ip", "route", "get", "1.1.1.1").stdout
        assert _links(box_run(rig, "ip", "-o", "link").stdout) == ["lo", "veth1"]
        unreachable = box_run(rig, "ip", "route", "get", "1.1.1.1", check=False)
        assert unreachable.returncode != 0 and "unreachable" in unreachable.stderr
        listening = box_run(rig, "ss", "-Hltn", "sport = :80").stdout.split()
        assert f"{BOX}:80" in listening and "0.0.0.0:80" not in listening and "*:80" not in listening
    finally:
        if forward is not None:
            forward.stop()
        log = box.stop()
    served = [json.loads(line) for line in log.splitlines() if line.startswith('{"served"')]
    assert served and served[0]["served"] >= 1 + len(PROBES), log[-3000:]


def _dnsmasq_in(pid: int) -> list[str]:
    """The command line of the dnsmasq running in the network namespace of process `pid`."""
    netns = os.readlink(f"/proc/{pid}/ns/net")
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if Path(argv[0].decode()).name == "dnsmasq" and os.readlink(proc / "ns" / "net") == netns:
                return [a.decode() for a in argv if a]
        except (OSError, IndexError, UnicodeDecodeError):
            continue
    raise AssertionError("no dnsmasq runs in the box's namespace")


def _links(ip_link: str) -> list[str]:
    return sorted(line.split(":")[1].strip().split("@")[0] for line in ip_link.splitlines() if ":" in line)


async def test_with_the_captive_portal_off_names_do_not_resolve_and_port_80_is_closed(rig):
    """The control: the same rig without conjuringd's drop-in and redirector (machine setting off)."""
    stale = rig.dropins / captive.DROPIN_NAME
    stale.write_text(captive.dropin_text("10.42.0.99"))  # left over from when it was on: must go
    admin = rig.dropins / "admin.conf"
    admin.write_text("address=/printer.lan/10.42.0.50\n")  # the administrator's own: stays, and works
    box = Box(rig.holder.pid, rig.bus.address, rig.dropins, "classroom", HUB_PORT, portal=False)
    try:
        up = box.ready()
        assert up["state"] == "activated" and up["http"] is None, up
        assert not stale.exists() and admin.read_text() == "address=/printer.lan/10.42.0.50\n"
        dhcp(rig.client, rig.workdir)
        assert rig.client.run("getent", "ahostsv4", "printer.lan").stdout.split()[0] == "10.42.0.50"
        for name in ("anything.test", "conjuring.local"):
            assert rig.client.run("getent", "ahostsv4", name, check=False).returncode == 2, name  # not found
        refused = rig.client.run("curl", "-s", "-o", "/dev/null", "--max-time", "10", f"http://{BOX}/", check=False)
        assert refused.returncode == 7, refused  # 7: could not connect
    finally:
        box.stop()


@dataclasses.dataclass
class BoxDaemon(Daemon):
    """The real conjuringd process, run in the box's network namespace (its files stay on the host)."""

    netns_pid: int = 0

    def command(self) -> list[str]:
        return ["nsenter", "-t", str(self.netns_pid), "-n", *super().command()]


async def test_the_daemon_serves_the_portal_and_restarts_the_hotspot_when_it_is_turned_off_and_on(rig):
    root = rig.workdir / "daemon"
    root.mkdir()
    daemon = BoxDaemon(root, args=["--hub", "none", "--network", "nm", "--usb", "none",
                                   "--dnsmasq-shared-dir", str(rig.dropins)],
                       env={"DBUS_SYSTEM_BUS_ADDRESS": rig.bus.address}, netns_pid=rig.holder.pid)
    daemon.config_dir.mkdir(parents=True)
    toml = daemon.config_dir / "conjuring.toml"
    toml.write_text('[network]\nserve = "classroom"\n')
    probe = ("curl", "-s", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_code} %{redirect_url}",
             "http://anything.test/generate_204")
    try:
        daemon.start()
        daemon.wait_event("captive_http_listening", timeout=60)
        assert (rig.dropins / captive.DROPIN_NAME).read_text() == captive.dropin_text(BOX)
        dhcp(rig.client, rig.workdir)
        assert rig.client.run(*probe).stdout.split() == ["302", LOGIN]

        toml.write_text('[network]\nserve = "classroom"\ncaptive_portal = false\n')
        daemon.wait_event("captive_dropin_removed", timeout=60)
        daemon.wait_event("action", action="activate network 'classroom'", count=2, timeout=60)
        daemon.wait_status(lambda s: (s.get("network") or {}).get("state") == "activated", timeout=60)
        assert rig.client.run("getent", "ahostsv4", "anything.test", check=False).returncode == 2
        assert rig.client.run(*probe, check=False).returncode == 6  # 6: could not resolve
        assert rig.client.run(*probe[:-1], f"http://{BOX}/generate_204", check=False).returncode == 7  # port 80 closed

        toml.write_text('[network]\nserve = "classroom"\n')
        daemon.wait_event("captive_http_listening", count=2, timeout=60)
        assert rig.client.run("getent", "ahostsv4", "anything.test").stdout.split()[0] == BOX
        assert rig.client.run(*probe).stdout.split() == ["302", LOGIN]
        assert daemon.proc.poll() is None and len(daemon.events("ready")) == 1
    finally:
        daemon.close()
