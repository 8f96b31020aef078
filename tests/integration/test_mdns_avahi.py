"""conjuring.local over real mDNS: real avahi-daemons in two network namespaces joined by a veth pair.

The box's side ("a", 10.77.0.1) publishes; a student's side ("b", 10.77.0.2) resolves with
avahi-resolve through its own avahi-daemon, so every answer crossed the wire.
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from conjuringd.adapters.avahi import AvahiPublisher
from conjuringd.reconcile.model import NameRecord
from tests.support.avahi import ADDRESSES, AvahiPair, require_avahi
from tests.support.daemon import Daemon
from tests.support.nm import PrivateSystemBus

pytestmark = pytest.mark.mdns
BOX = ADDRESSES["a"]


@pytest.fixture
def pair(tmp_path):
    require_avahi()
    rig = AvahiPair(tmp_path / "mdns")
    try:
        yield rig.start()
    finally:
        rig.stop()


class NetnsDaemon(Daemon):
    """conjuringd run inside a network namespace (it sees that namespace's addresses)."""

    prefix: tuple[str, ...] = ()

    def command(self) -> list[str]:
        return [*self.prefix, *super().command()]


def box_daemon(tmp_path, pair: AvahiPair, bus: str, toml: str = "") -> NetnsDaemon:
    root = tmp_path / "d"
    root.mkdir()
    d = NetnsDaemon(root, args=["--hub", "none", "--network", "none", "--usb", "none", "--mdns", "avahi"],
                    env={"DBUS_SYSTEM_BUS_ADDRESS": bus})
    d.prefix = tuple(pair.netns_exec("a"))
    d.config_dir.mkdir(parents=True)
    (d.config_dir / "conjuring.toml").write_text(toml)
    return d


async def wait_group(publisher: AvahiPublisher, state: str, timeout: float = 15):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        observed = await publisher.observe((BOX,))
        if observed.group == state:
            return observed
        await asyncio.sleep(0.1)
    raise AssertionError(f"entry group never {state}: {observed}")


async def test_adapter_publishes_name_and_service_resolved_over_the_wire_withdraws_and_frees(pair):
    wakes: list[str] = []
    publisher = AvahiPublisher(pair.bus("a"))
    await publisher.start(wakes.append)
    try:
        assert (await publisher.observe((BOX,))).avahi == "running"
        await publisher.publish(NameRecord("conjuring", "conjuring", (BOX,), 8989))
        await wait_group(publisher, "established")
        assert "mdns: conjuring.local established" in wakes
        assert await asyncio.to_thread(pair.resolve, "conjuring.local") == BOX
        services = await asyncio.to_thread(pair.browse_http)
        ours = [s for s in services if s[3] == r"JupyterHub\032on\032conjuring"]
        assert ours and ours[0][6:9] == ["conjuring.local", BOX, "8989"], services
        await publisher.withdraw()  # what plan() asks when no address is left
        assert (await publisher.observe(())).record is None
        assert await asyncio.to_thread(pair.forgotten, "conjuring.local")
        await publisher.publish(NameRecord("conjuring", "conjuring", (BOX,), 8989))  # the same group again
        await wait_group(publisher, "established")
        assert await asyncio.to_thread(pair.resolve_until, "conjuring.local", BOX) == BOX
    finally:
        await publisher.close()  # frees the group: avahi sends goodbyes, the other side forgets the name
    assert await asyncio.to_thread(pair.forgotten, "conjuring.local")


async def test_adapter_sees_a_collision_on_the_network(pair):
    """Side b (another box) holds conjuring.local already: our probe on side a collides."""
    holder = AvahiPublisher(pair.bus("b"))
    await holder.start(lambda _: None)
    await holder.publish(NameRecord("conjuring", "conjuring", (ADDRESSES["b"],), 8000))
    await wait_group(holder, "established")
    wakes: list[str] = []
    publisher = AvahiPublisher(pair.bus("a"))
    await publisher.start(wakes.append)
    try:
        await publisher.publish(NameRecord("conjuring", "conjuring", (BOX,), 8989))
        observed = await wait_group(publisher, "collision")
        assert observed.record.fqdn == "conjuring.local"
        assert "mdns: conjuring.local collision" in wakes
    finally:
        await publisher.close()
        await holder.close()


async def test_adapter_without_avahi_or_without_bus_observes_it_and_never_raises(tmp_path):
    require_avahi()
    bus = PrivateSystemBus(tmp_path).start()
    try:
        publisher = AvahiPublisher(bus.address, call_timeout=3)
        await publisher.start(lambda _: None)
        observed = await publisher.observe((BOX,))
        assert (observed.avahi, observed.record) == ("absent", None)
        await publisher.publish(NameRecord("conjuring", "conjuring", (BOX,), 8989))  # avahi gone: no exception
        assert (await publisher.observe((BOX,))).avahi == "absent"
        await publisher.close()
    finally:
        bus.stop()
    nobus = AvahiPublisher(f"unix:path={tmp_path}/no-such-bus.socket", call_timeout=3)
    await nobus.start(lambda _: None)
    observed = await nobus.observe((BOX,))
    assert observed.avahi == "no bus" and "no-such-bus" in observed.detail
    await nobus.close()


def test_daemon_takes_conjuring_2_on_collision_and_publishes_again_after_avahi_restarts(tmp_path, pair):
    """The real conjuringd (--network none, in the box's namespace) publishes [network] name = "Room-4";
    another device on the wire owns room-4.local, so the box becomes room-4-2.local; after avahi-daemon
    restarts, the name comes back."""
    holder = AvahiPublisher(pair.bus("b"))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(holder.start(lambda _: None))
    loop.run_until_complete(holder.publish(NameRecord("room-4", "room-4", (ADDRESSES["b"],), 8000)))
    loop.run_until_complete(wait_group(holder, "established"))
    d = box_daemon(tmp_path, pair, pair.bus("a"), '[network]\nname = "Room-4"\n')
    try:
        d.start()
        status = d.wait_status(lambda s: s.get("mdns_name"), timeout=40)
        assert status["mdns_name"] == "room-4-2.local" and status["mdns_state"] == "established"
        assert "room-4.local is taken" in status["mdns_error"]
        assert pair.resolve_until("room-4-2.local", BOX) == BOX
        assert pair.resolve("room-4.local") == ADDRESSES["b"]  # the other device keeps its name
        d.wait_event("action", action=f"publish room-4-2.local -> {BOX}")
        named = [e for e in d.events("mdns_published") if e["name"] == "room-4-2.local"]
        assert named and named[0]["addresses"] == [BOX]
        assert any("room-4.local is taken" in e["problem"] for e in d.events("mdns_problem"))
        named_status = d.notify.wait_for(lambda m: m.startswith("STATUS=") and "as room-4-2.local" in m, timeout=10)
        assert named_status, d.notify.messages
        published = len(d.events("mdns_publishing"))

        pair.stop_avahi("a")
        d.wait_status(lambda s: s.get("mdns_state") == "avahi absent", timeout=30)
        pair.start_avahi("a")
        d.wait_event("mdns_publishing", count=published + 1, timeout=30)
        status = d.wait_status(lambda s: s.get("mdns_name"), timeout=40)
        assert status["mdns_name"] in ("room-4-2.local", "room-4-3.local")
        assert pair.resolve_until(status["mdns_name"], BOX) == BOX
    finally:
        d.close()
        loop.run_until_complete(holder.close())
        loop.close()
    assert pair.forgotten(status["mdns_name"])  # withdrawn when the daemon stopped


def test_daemon_without_avahi_warns_once_keeps_serving_and_publishes_when_avahi_starts(tmp_path, pair):
    """A bus with no avahi-daemon on it: one clear warning naming what to install and the address
    students can use instead; when avahi-daemon appears on that bus, conjuring.local is published."""
    lonely = PrivateSystemBus(tmp_path / "lonely")
    (tmp_path / "lonely").mkdir()
    lonely.start()
    d = box_daemon(tmp_path, pair, lonely.address)
    try:
        pair.stop_avahi("a")
        d.start()
        status = d.wait_status(lambda s: s.get("mdns_state") == "avahi absent" and s.get("converged"), timeout=40)
        assert status["mdns_name"] == ""
        assert "install (or start) avahi-daemon to publish conjuring.local" in status["mdns_error"]
        assert f"students can use http://{BOX}:8989" in status["mdns_error"]
        assert "configuration" in status["phase"] and "active" in status["phase"]
        d.proc.send_signal(signal.SIGHUP)  # another pass: no second warning
        d.wait_event("pass_start", count=2, timeout=30)
        d.wait_event("converged", count=2, timeout=30)
        problems = d.events("mdns_problem")
        assert len(problems) == 1 and "avahi-daemon" in problems[0]["problem"], json.dumps(problems)
        assert problems[0]["level"] == "warning"

        pair.start_avahi("a", bus=lonely.address)
        status = d.wait_status(lambda s: s.get("mdns_name") == "conjuring.local", timeout=40)
        assert status["mdns_error"] is None
        assert pair.resolve_until("conjuring.local", BOX) == BOX
    finally:
        d.close()
        pair.stop_avahi("a")
        lonely.stop()

