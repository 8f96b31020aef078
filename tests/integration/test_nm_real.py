"""The NetworkManager adapter against a real NetworkManager 1.42 (private bus, own netns, veth)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from dbus_next import Variant
from dbus_next.errors import DBusError

from conjuringd.adapters import nm_settings as nms
from conjuringd.adapters.nm import ActivationFailed, NetworkManagerAdapter
from conjuringd.config.model import HotspotSettings, NetworkSettings
from conjuringd.config.problems import ConfigError, TransientError
from conjuringd.urls import serve_urls
from tests.support.nm import NMClient, real_nm  # noqa: F401 - fixture

pytestmark = pytest.mark.nm

SERVE = NetworkSettings(serve="serve", build="build")
SERVE_OTHER_BUILD = NetworkSettings(serve="serve", build="build-other")
ACTIVATED = nms.AC_ACTIVATED


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def adapter(real_nm):  # noqa: F811
    wakes: list[str] = []
    nm = NetworkManagerAdapter(real_nm.bus.address, activation_timeout=20)
    await nm.start(wakes.append)
    nm.wakes = wakes
    yield nm
    await nm.close()


async def test_activates_serve_by_id_and_reads_addresses(adapter, real_nm):  # noqa: F811
    assert (await adapter.observe(SERVE)).state == "inactive"
    await adapter.activate_serve(SERVE)
    observed = await adapter.observe(SERVE)
    assert observed.state == "activated"
    assert observed.addresses == ("10.77.0.1",)
    assert serve_urls(observed, 8989) == ("http://10.77.0.1:8989",)
    async with NMClient(real_nm.bus.address) as client:
        active = await client.active()
    assert active["serve"][1] == ACTIVATED


async def test_unmanaged_and_absent(adapter):
    calls = adapter.calls
    assert (await adapter.observe(NetworkSettings(serve="none"))).state == "unmanaged"
    assert adapter.calls == calls
    assert (await adapter.observe(NetworkSettings(serve="nope"))).state == "absent"
    with pytest.raises(ActivationFailed, match="no such connection"):
        await adapter.activate_serve(NetworkSettings(serve="nope"))


async def test_build_network_switches_and_back(adapter, real_nm):  # noqa: F811
    await adapter.activate_serve(SERVE)
    async with NMClient(real_nm.bus.address) as client:
        async with adapter.build_network(SERVE):
            inside = await client.active()
            assert inside["build"][1] == ACTIVATED
            assert "serve" not in inside  # same device: serve had to go down
        after = await client.active()
    assert after["serve"][1] == ACTIVATED and "build" not in after
    assert (await adapter.observe(SERVE)).state == "activated"


async def test_build_network_switches_back_when_the_build_raises(adapter, real_nm):  # noqa: F811
    await adapter.activate_serve(SERVE)
    with pytest.raises(RuntimeError, match="build broke"):
        async with adapter.build_network(SERVE):
            raise RuntimeError("build broke")
    async with NMClient(real_nm.bus.address) as client:
        after = await client.active()
    assert after["serve"][1] == ACTIVATED and "build" not in after


async def test_build_network_switches_back_when_cancelled(adapter, real_nm):  # noqa: F811
    await adapter.activate_serve(SERVE)
    inside = asyncio.Event()

    async def build():
        async with adapter.build_network(SERVE):
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(build())
    await asyncio.wait_for(inside.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with NMClient(real_nm.bus.address) as client:
        after = await client.active()
    assert after["serve"][1] == ACTIVATED and "build" not in after


async def test_build_on_another_device_leaves_serve_alone(adapter, real_nm):  # noqa: F811
    await adapter.activate_serve(SERVE_OTHER_BUILD)
    async with NMClient(real_nm.bus.address) as client:
        serve_path = (await client.active())["serve"][0]
        async with adapter.build_network(SERVE_OTHER_BUILD):
            inside = await client.active()
            assert inside["build-other"][1] == ACTIVATED
            assert inside["serve"] == (serve_path, ACTIVATED)  # untouched
        assert (await client.active())["serve"] == (serve_path, ACTIVATED)


async def test_build_network_already_up_is_not_switched(adapter, real_nm):  # noqa: F811
    spec = NetworkSettings(serve="serve", build="serve")
    await adapter.activate_serve(spec)
    calls = adapter.calls
    async with adapter.build_network(spec):
        pass
    assert adapter.calls == calls


async def test_reactivates_serve_deactivated_behind_its_back(adapter, real_nm):  # noqa: F811
    await adapter.activate_serve(SERVE)
    await adapter.observe(SERVE)
    async with NMClient(real_nm.bus.address) as client:
        await client.deactivate("serve")
    await until(lambda: _async(any("serve connection 'serve' deactivated" in w for w in adapter.wakes)), what="a wake")
    assert (await adapter.observe(SERVE)).state == "inactive"
    await adapter.activate_serve(SERVE)
    assert (await adapter.observe(SERVE)).state == "activated"


async def test_idle_observe_makes_no_dbus_calls_and_signals_invalidate(adapter, real_nm):  # noqa: F811
    await adapter.activate_serve(SERVE)
    await _settle(adapter)
    before = adapter.calls
    for _ in range(50):
        assert (await adapter.observe(SERVE)).state == "activated"
    assert adapter.calls == before
    async with NMClient(real_nm.bus.address) as client:
        await client.deactivate("serve")
    await until(lambda: _async(bool(adapter.wakes)), what="a wake")
    assert (await adapter.observe(SERVE)).state == "inactive"
    assert adapter.calls > before


async def test_hotspot_settings_accepted_by_networkmanager_and_read_back_equal(real_nm):  # noqa: F811
    spec = HotspotSettings(ssid="Klassenzimmer ü", passphrase="correct horse", band="bg", channel=6, country="DE")
    uid = nms.hotspot_uuid("Hotspot")
    wanted = nms.hotspot_settings(spec, uid, "Hotspot", "wlan0")
    async with NMClient(real_nm.bus.address) as client:
        path = await client.add_connection(wanted)
        conn_iface = "org.freedesktop.NetworkManager.Settings.Connection"
        stored = nms.plain(await client.call(path, conn_iface, "GetSettings"))
        secrets = nms.plain(await client.call(path, conn_iface, "GetSecrets", "s", "802-11-wireless-security"))
    stored["802-11-wireless-security"].update(secrets["802-11-wireless-security"])
    assert nms.settings_differ(wanted, stored) == ()
    assert stored["802-11-wireless"]["ssid"] == "Klassenzimmer ü".encode()
    assert stored["802-11-wireless"]["mode"] == "ap"
    assert stored["802-11-wireless-security"]["psk"] == "correct horse"
    assert stored["connection"]["uuid"] == uid and stored["ipv4"]["method"] == "shared"
    changed = nms.hotspot_settings(HotspotSettings(ssid="Klassenzimmer ü", passphrase="other horse"), uid,
                                   "Hotspot", "wlan0")
    assert nms.settings_differ(changed, stored) == ("802-11-wireless.channel", "802-11-wireless-security.psk")


async def test_invalid_hotspot_rejected_by_the_validator_first_and_by_networkmanager_too(real_nm):  # noqa: F811
    bad = HotspotSettings(ssid="Room", passphrase="short")
    with pytest.raises(ConfigError, match="passphrase"):
        nms.hotspot_settings(bad, nms.hotspot_uuid("Hotspot"), "Hotspot", None)
    forced = nms.hotspot_settings(HotspotSettings(ssid="Room", passphrase="long enough"), str(uuid.uuid4()), "x", None)
    forced["802-11-wireless-security"]["psk"] = Variant("s", bad.passphrase)
    async with NMClient(real_nm.bus.address) as client:
        with pytest.raises(DBusError, match="psk"):
            await client.add_connection(forced, saved=False)


async def test_channel_rules_match_networkmanager(real_nm):  # noqa: F811
    """Every channel 0..200 in both bands: our validator and NetworkManager agree."""
    disagree = []
    async with NMClient(real_nm.bus.address) as client:
        for band in ("bg", "a"):
            for channel in range(0, 201):
                spec = HotspotSettings(ssid="Room", passphrase="long enough", band=band, channel=channel)
                ours = not nms.hotspot_problems(spec)
                settings = nms.hotspot_settings(HotspotSettings(ssid="Room", passphrase="long enough", band=band),
                                                str(uuid.uuid4()), "sweep", None)
                settings["802-11-wireless"]["channel"] = Variant("u", channel)
                try:
                    await client.delete(await client.add_connection(settings, saved=False))
                    theirs = True
                except DBusError:
                    theirs = False
                if ours != theirs:
                    disagree.append((band, channel, ours, theirs))
    assert disagree == []


async def test_networkmanager_killed_and_restarted(adapter, real_nm):  # noqa: F811
    await adapter.activate_serve(SERVE)
    real_nm.kill_nm()
    await until(lambda: _async(any("stopped" in w for w in adapter.wakes)), what="the stop wake")
    with pytest.raises(TransientError):
        await adapter.observe(SERVE)
    with pytest.raises(TransientError):
        await adapter.activate_serve(SERVE)
    real_nm.start_nm(wait=False)
    await until(lambda: _async(any("started" in w for w in adapter.wakes)), what="the start wake")
    real_nm.wait_online()

    async def converged():
        try:
            await adapter.activate_serve(SERVE)
            return (await adapter.observe(SERVE)).state == "activated"
        except TransientError:
            return False

    await until(converged, timeout=30, what="serve activated again")
    adapter.wakes.clear()
    async with NMClient(real_nm.bus.address) as client:  # signals still reach us from the new NetworkManager
        await client.deactivate("serve")
    await until(lambda: _async(any("serve connection 'serve' deactivated" in w for w in adapter.wakes)), what="a wake after restart")


async def _async(value):
    return value


async def _settle(adapter: NetworkManagerAdapter, quiet: float = 0.3) -> None:
    """Observe until a quiet period passes without any call (late signals of an activation)."""
    loop = asyncio.get_running_loop()
    while True:
        before, started = adapter.calls, loop.time()
        while loop.time() - started < quiet:
            await adapter.observe(SERVE)
            await asyncio.sleep(0.05)
        if adapter.calls == before:
            return


def dhcp_settings(conn_id: str, interface: str) -> dict:
    """A DHCP profile on a veth whose peer runs no DHCP server: it stays 'activating'."""
    return {
        "connection": {"id": Variant("s", conn_id), "uuid": Variant("s", str(uuid.uuid4())),
                       "type": Variant("s", "802-3-ethernet"), "interface-name": Variant("s", interface),
                       "autoconnect": Variant("b", False)},
        "ipv4": {"method": Variant("s", "auto")},
        "ipv6": {"method": Variant("s", "ignore")},
    }


async def test_activation_timeout_is_reported(real_nm):  # noqa: F811
    async with NMClient(real_nm.bus.address) as client:
        await client.add_connection(dhcp_settings("slow", "veth0"))
    adapter = NetworkManagerAdapter(real_nm.bus.address, activation_timeout=1.0)
    try:
        with pytest.raises(ActivationFailed) as caught:
            await adapter.activate_serve(NetworkSettings(serve="slow"))
        assert caught.value.reason == "timed out"
        assert "still activating" in str(caught.value)
    finally:
        await adapter.close()


async def test_failed_build_network_still_restores_serve(real_nm):  # noqa: F811
    async with NMClient(real_nm.bus.address) as client:
        await client.add_connection(dhcp_settings("slow-build", "veth1"))
        adapter = NetworkManagerAdapter(real_nm.bus.address, activation_timeout=1.0)
        spec = NetworkSettings(serve="serve", build="slow-build")
        try:
            await adapter.activate_serve(spec)
            with pytest.raises(ActivationFailed, match="timed out"):
                async with adapter.build_network(spec):
                    raise AssertionError("the block must not run without its network")
            assert (await client.active())["serve"][1] == ACTIVATED
        finally:
            await adapter.close()


async def test_networkmanager_refusal_in_words(adapter, real_nm):  # noqa: F811
    wifi_client = {
        "connection": {"id": Variant("s", "Office"), "uuid": Variant("s", str(uuid.uuid4())),
                       "type": Variant("s", "802-11-wireless"), "interface-name": Variant("s", "wlan0")},
        "802-11-wireless": {"ssid": Variant("ay", b"office"), "mode": Variant("s", "infrastructure")},
    }
    async with NMClient(real_nm.bus.address) as client:
        await client.add_connection(wifi_client)
    await until(lambda: _async(any("connection added" in w for w in adapter.wakes)), what="a wake")
    with pytest.raises(ActivationFailed) as caught:
        await adapter.activate_serve(NetworkSettings(serve="Office"))
    assert caught.value.reason == "no suitable device"
    assert "No suitable device found" in caught.value.detail


async def test_an_activation_already_under_way_is_followed_not_restarted(real_nm):  # noqa: F811
    async with NMClient(real_nm.bus.address) as client:
        await client.add_connection(dhcp_settings("slow", "veth0"))
        adapter = NetworkManagerAdapter(real_nm.bus.address, activation_timeout=0.5)
        try:
            with pytest.raises(ActivationFailed, match="timed out"):
                await adapter.activate_serve(NetworkSettings(serve="slow"))
            first = (await client.active())["slow"][0]
            assert (await adapter.observe(NetworkSettings(serve="slow"))).state == "activating"
            with pytest.raises(ActivationFailed, match="timed out"):
                await adapter.activate_serve(NetworkSettings(serve="slow"))
            assert (await client.active())["slow"][0] == first  # the same activation, not a new one
        finally:
            await adapter.close()


async def test_any_refusal_by_networkmanager_is_a_typed_transient_error(adapter):
    from conjuringd.adapters.nm_bus import I_NM, NM_PATH, NMRefused

    with pytest.raises(NMRefused) as caught:
        await adapter._nm.call(NM_PATH, "nm", I_NM, "DeactivateConnection", NM_PATH + "/ActiveConnection/999")
    assert isinstance(caught.value, TransientError)
    assert caught.value.type.startswith("org.freedesktop.NetworkManager.")
