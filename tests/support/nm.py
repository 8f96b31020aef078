"""NetworkManager test fixtures: a private system bus, a real NetworkManager in its own
network namespace (veth pair), and python-dbusmock's NetworkManager template with the
Wi-Fi gaps filled (tests/support/nm_mock_template.py).

Real NetworkManager: a holder process owns a mount + network namespace (tmpfs over
/run/NetworkManager and /var/lib/NetworkManager, read-only sysfs, veth0<->veth1); NetworkManager
runs inside it through nsenter, so it can be killed and started again in the same namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid as _uuid
from pathlib import Path

import pytest
from dbus_next import Variant

TEMPLATE = str(Path(__file__).with_name("nm_mock_template.py"))
MOCK_IFACE = "org.freedesktop.DBus.Mock"
NM_NAME = "org.freedesktop.NetworkManager"

NM_CONF = """[main]
plugins=keyfile
no-auto-default=*
auth-polkit=false
dhcp=internal
dns=none
rc-manager=unmanaged

[keyfile]
path={conns}
unmanaged-devices=none

[connectivity]
enabled=false

[logging]
level={level}
"""

HOLDER = """
set -e
mkdir -p /run/NetworkManager /var/lib/NetworkManager
mount -t tmpfs nmrun /run/NetworkManager
mount -t tmpfs nmlib /var/lib/NetworkManager
mount -t sysfs -o ro sysfs /sys
ip link set lo up
ip link add veth0 type veth peer name veth1
ip link set veth0 up
ip link set veth1 up
{extra}
echo ready
exec sleep infinity
"""


def unavailable(reason: str) -> None:
    """Skip, or fail in CI (CI must run every NetworkManager test)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs this NetworkManager test to run: {reason}")
    pytest.skip(reason)


def require_real_nm() -> None:
    if os.geteuid() != 0:
        unavailable("needs root to create a network namespace for NetworkManager")
    for tool in ("NetworkManager", "nm-online", "dbus-daemon", "unshare", "nsenter", "ip"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            unavailable(f"{tool} is not installed (.ci/install-deps.sh installs it)")


def require_dbusmock() -> None:
    if shutil.which("dbus-daemon") is None:
        unavailable("dbus-daemon is not installed")
    try:
        import dbus  # noqa: F401
        import dbusmock  # noqa: F401
    except ImportError as exc:
        unavailable(f"python-dbusmock / dbus-python missing: {exc}")


class PrivateSystemBus:
    """A dbus-daemon of our own, listening on a filesystem socket (reachable from any netns)."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.socket = workdir / "system_bus.socket"
        self.address = f"unix:path={self.socket}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrivateSystemBus":
        config = self.dir / "bus.conf"
        config.write_text(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
            " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
            f"<busconfig><type>system</type><listen>unix:path={self.socket}</listen>"
            "<policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>"
            "<allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n"
        )
        self.proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # printed once it listens
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


class RealNetworkManager:
    """NetworkManager 1.42 on a private bus, in a network namespace with veth0/veth1."""

    def __init__(self, bus: PrivateSystemBus, workdir: Path, extra_setup: str = ""):
        self.bus = bus
        self.dir = workdir
        self.extra_setup = extra_setup  # more shell run in the namespace before NetworkManager starts
        self.holder: subprocess.Popen | None = None
        self.nm: subprocess.Popen | None = None
        self.conns = workdir / "conns"
        self.log = workdir / "NetworkManager.log"

    def env(self) -> dict:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def start(self) -> "RealNetworkManager":
        self.conns.mkdir(exist_ok=True)
        (self.dir / "confd").mkdir(exist_ok=True)
        (self.dir / "nm.conf").write_text(NM_CONF.format(conns=self.conns, level="INFO"))
        self.holder = subprocess.Popen(
            ["unshare", "-m", "-n", "--propagation", "private", "bash", "-c", HOLDER.format(extra=self.extra_setup)],
            stdout=subprocess.PIPE, env=self.env(),
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != b"ready":
            self.stop()
            unavailable("could not set up the network namespace for NetworkManager")
        self.start_nm()
        return self

    def start_nm(self, wait: bool = True) -> None:
        assert self.holder is not None
        d = self.dir
        argv = [
            "nsenter", "-t", str(self.holder.pid), "-m", "-n",
            "NetworkManager", "--no-daemon", f"--config={d}/nm.conf", f"--config-dir={d}/confd",
            f"--system-config-dir={d}/confd", f"--state-file={d}/nm.state", f"--intern-config={d}/intern.conf",
        ]
        with open(self.log, "ab") as log:
            self.nm = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env())
        if wait:
            self.wait_online()

    def wait_online(self, timeout: int = 30) -> None:
        done = subprocess.run(["nm-online", "-s", "-q", "-t", str(timeout)], env=self.env())
        if done.returncode != 0:
            raise RuntimeError(f"NetworkManager did not start (see {self.log}):\n{self.log.read_text()[-3000:]}")

    def kill_nm(self, sig: int = signal.SIGKILL) -> None:
        if self.nm is not None:
            self.nm.send_signal(sig)
            self.nm.wait(timeout=20)
            self.nm = None

    def stop(self) -> None:
        self.kill_nm(signal.SIGTERM)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(timeout=10)
            self.holder = None


def ethernet_settings(conn_id: str, uuid: str, interface: str, address: str) -> dict:
    """A static IPv4 ethernet profile bound to `interface` (no DHCP, no traffic)."""
    return {
        "connection": {
            "id": Variant("s", conn_id),
            "uuid": Variant("s", uuid),
            "type": Variant("s", "802-3-ethernet"),
            "interface-name": Variant("s", interface),
            "autoconnect": Variant("b", False),
        },
        "ipv4": {
            "method": Variant("s", "manual"),
            "address-data": Variant("aa{sv}", [{"address": Variant("s", address), "prefix": Variant("u", 24)}]),
        },
        "ipv6": {"method": Variant("s", "ignore")},
    }


class MockNetworkManager:
    """python-dbusmock's `networkmanager` template, extended by nm_mock_template.py."""

    def __init__(self, bus: PrivateSystemBus):
        self.bus = bus
        self.proc: subprocess.Popen | None = None
        self.obj = None
        self.conn = None

    def start(self) -> "MockNetworkManager":
        import dbus

        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dbusmock", "--system", "--template", TEMPLATE],
            env=env, stdout=subprocess.DEVNULL,
        )
        self.conn = dbus.bus.BusConnection(self.bus.address)
        deadline = time.monotonic() + 20
        while not self.conn.name_has_owner(NM_NAME):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the dbusmock NetworkManager did not come up")
            time.sleep(0.02)
        self.obj = self.conn.get_object(NM_NAME, "/org/freedesktop")
        return self

    def mock(self, method: str, *args):
        return getattr(self.obj, method)(*args, dbus_interface=MOCK_IFACE)

    def add_wifi(self, name: str = "wlan0", caps: int | None = None) -> str:
        path = str(self.mock("AddWiFiDevice", name, name, 30))
        if caps is not None:
            self.mock("SetProperty", path, "org.freedesktop.NetworkManager.Device.Wireless",
                      "WirelessCapabilities", _uint32(caps))
        return path

    def add_ethernet(self, name: str = "eth0") -> str:
        return str(self.mock("AddEthernetDevice", name, name, 30))

    def fail_next(self, conn_id: str, reason: int) -> None:
        """The next activation of `conn_id` ends DEACTIVATED with this NMActiveConnectionStateReason."""
        self.mock("ConjuringFailActivation", conn_id, _uint32(reason))

    def activations(self) -> list[tuple[str, str]]:
        """(connection path, device path) of every ActivateConnection call so far."""
        return [(str(c), str(d)) for c, d in self.mock("ConjuringActivations")]

    def connection_settings(self) -> list[dict]:
        settings = self.conn.get_object(NM_NAME, "/org/freedesktop/NetworkManager/Settings")
        out = []
        for path in settings.ListConnections(dbus_interface="org.freedesktop.NetworkManager.Settings"):
            obj = self.conn.get_object(NM_NAME, path)
            out.append(obj.GetSettings(dbus_interface="org.freedesktop.NetworkManager.Settings.Connection"))
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _uint32(value: int):
    import dbus

    return dbus.UInt32(value)


class NMClient:
    """A plain dbus-next client for tests (raw messages, independent of the adapter under test)."""

    def __init__(self, address: str):
        self.address = address
        self.bus = None

    async def __aenter__(self) -> "NMClient":
        from dbus_next.aio import MessageBus

        self.bus = await MessageBus(bus_address=self.address).connect()
        return self

    async def __aexit__(self, *exc) -> None:
        self.bus.disconnect()

    async def call(self, path: str, iface: str, member: str, signature: str = "", *body):
        from dbus_next import Message, MessageType
        from dbus_next.errors import DBusError

        reply = await self.bus.call(Message(destination=NM_NAME, path=path, interface=iface, member=member,
                                            signature=signature, body=list(body)))
        if reply.message_type is MessageType.ERROR:
            raise DBusError(reply.error_name, reply.body[0] if reply.body else "")
        return reply.body[0] if len(reply.body) == 1 else reply.body

    async def prop(self, path: str, iface: str, name: str):
        return (await self.call(path, "org.freedesktop.DBus.Properties", "Get", "ss", iface, name)).value

    async def add_connection(self, settings: dict, saved: bool = True) -> str:
        return await self.call("/org/freedesktop/NetworkManager/Settings", "org.freedesktop.NetworkManager.Settings",
                               "AddConnection" if saved else "AddConnectionUnsaved", "a{sa{sv}}", settings)

    async def delete(self, path: str) -> None:
        await self.call(path, "org.freedesktop.NetworkManager.Settings.Connection", "Delete")

    async def active(self) -> dict[str, tuple[str, int]]:
        """connection id -> (active connection path, NMActiveConnectionState)."""
        out = {}
        for path in await self.prop("/org/freedesktop/NetworkManager", NM_NAME, "ActiveConnections"):
            iface = "org.freedesktop.NetworkManager.Connection.Active"
            out[await self.prop(path, iface, "Id")] = (path, await self.prop(path, iface, "State"))
        return out

    async def deactivate(self, conn_id: str) -> None:
        path, _ = (await self.active())[conn_id]
        await self.call("/org/freedesktop/NetworkManager", NM_NAME, "DeactivateConnection", "o", path)


@pytest.fixture
async def real_nm(tmp_path):
    """A fresh private bus and real NetworkManager with 'serve' and 'build' on veth1, 'build-other' on veth0."""
    require_real_nm()
    bus = PrivateSystemBus(tmp_path).start()
    nm = RealNetworkManager(bus, tmp_path)
    try:
        nm.start()
        async with NMClient(bus.address) as client:
            for conn_id, iface, address in SEEDED:
                await client.add_connection(ethernet_settings(conn_id, str(_uuid.uuid4()), iface, address))
        yield nm
    finally:
        nm.stop()
        bus.stop()


SEEDED = (("serve", "veth1", "10.77.0.1"), ("build", "veth1", "10.78.0.1"), ("build-other", "veth0", "10.79.0.1"))


@pytest.fixture
def mock_nm(tmp_path):
    """A fresh private bus with the dbusmock NetworkManager (no devices yet)."""
    require_dbusmock()
    bus = PrivateSystemBus(tmp_path).start()
    mock = MockNetworkManager(bus)
    try:
        yield mock.start()
    finally:
        mock.stop()
        bus.stop()
