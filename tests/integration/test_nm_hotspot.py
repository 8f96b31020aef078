"""Wi-Fi hotspot paths against python-dbusmock's NetworkManager template (no Wi-Fi in this kernel).

The template is extended by tests/support/nm_mock_template.py: real-like activation
(ACTIVATING -> ACTIVATED by signal, or DEACTIVATED with a reason), device checks, AP mode.
"""

from __future__ import annotations

import asyncio

import pytest
from dbus_next import Variant

from conjuringd.adapters import nm_settings as nms
from conjuringd.adapters.nm import ActivationFailed, NetworkManagerAdapter
from conjuringd.config.model import HotspotSettings, NetworkSettings
from tests.support.nm import mock_nm  # noqa: F401 - fixture

pytestmark = pytest.mark.nm

SPEC = NetworkSettings(serve="Hotspot", hotspot=HotspotSettings(ssid="Classroom 4", passphrase="turnip-lantern"))
UUID = nms.hotspot_uuid("Hotspot")


@pytest.fixture
def devices(mock_nm):  # noqa: F811
    """An ethernet device first (so a careless "first device" would pick it), then a Wi-Fi one."""
    return mock_nm.add_ethernet("eth0"), mock_nm.add_wifi("wlan0")


async def started(mock_nm) -> NetworkManagerAdapter:  # noqa: F811
    nm = NetworkManagerAdapter(mock_nm.bus.address, activation_timeout=10)
    nm.wakes = []
    await nm.start(nm.wakes.append)
    return nm


@pytest.fixture
async def adapter(mock_nm, devices):  # noqa: F811
    nm = await started(mock_nm)
    yield nm
    await nm.close()


async def wait_wake(adapter: NetworkManagerAdapter, text: str) -> None:
    for _ in range(500):
        if any(text in w for w in adapter.wakes):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no wake with {text!r}: {adapter.wakes}")


def hotspots(mock_nm):  # noqa: F811
    return [s for s in mock_nm.connection_settings() if str(s["connection"]["uuid"]) == UUID]


async def test_hotspot_created_once_with_the_deterministic_uuid(adapter, mock_nm, devices):  # noqa: F811
    assert (await adapter.observe(SPEC)).state == "inactive"  # missing, but can be created
    await adapter.activate_serve(SPEC)
    observed = await adapter.observe(SPEC)
    assert (observed.state, observed.ssid, observed.addresses) == ("activated", "Classroom 4", ("10.42.0.1",))
    [stored] = hotspots(mock_nm)
    assert bytes(stored["802-11-wireless"]["ssid"]) == b"Classroom 4"
    assert str(stored["802-11-wireless"]["mode"]) == "ap"
    assert str(stored["connection"]["id"]) == "Hotspot"
    await adapter.activate_serve(SPEC)  # converged: nothing created, nothing re-activated
    assert len(hotspots(mock_nm)) == 1
    assert len(mock_nm.activations()) == 1
    assert nms.serving_status(observed, 8989) == "serving at http://10.42.0.1:8989 on Hotspot (SSID Classroom 4)"


async def test_found_again_after_a_restart_without_a_duplicate(adapter, mock_nm, devices):  # noqa: F811
    await adapter.activate_serve(SPEC)
    await adapter.close()
    again = NetworkManagerAdapter(mock_nm.bus.address, activation_timeout=10)
    await again.start(lambda reason: None)
    try:
        assert (await again.observe(SPEC)).state == "activated"
        await again.activate_serve(SPEC)
    finally:
        await again.close()
    assert len(hotspots(mock_nm)) == 1
    assert len(mock_nm.activations()) == 1


async def test_updated_in_place_when_the_passphrase_changes(adapter, mock_nm, devices):  # noqa: F811
    await adapter.activate_serve(SPEC)
    [before] = [s for s in mock_nm.connection_settings() if str(s["connection"]["uuid"]) == UUID]
    changed = NetworkSettings(serve="Hotspot", hotspot=HotspotSettings(ssid="Classroom 4", passphrase="new-passphrase"))
    assert (await adapter.observe(changed)).state == "outdated"
    await adapter.activate_serve(changed)
    [after] = hotspots(mock_nm)
    assert str(after["802-11-wireless-security"]["psk"]) == "new-passphrase"
    assert str(after["connection"]["uuid"]) == str(before["connection"]["uuid"])
    assert len(mock_nm.activations()) == 2  # re-activated once to apply it
    assert (await adapter.observe(changed)).state == "activated"
    await adapter.activate_serve(changed)
    assert len(mock_nm.activations()) == 2


async def test_activated_on_the_wifi_device_never_on_ethernet(adapter, mock_nm, devices):  # noqa: F811
    eth, wifi = devices
    await adapter.activate_serve(SPEC)
    assert [device for _, device in mock_nm.activations()] == [wifi]
    [stored] = hotspots(mock_nm)
    assert str(stored["connection"]["interface-name"]) == "wlan0"


async def test_no_access_point_capable_device(mock_nm):  # noqa: F811
    mock_nm.add_ethernet("eth0")
    mock_nm.add_wifi("wlan0", caps=0x3F)  # a Wi-Fi client that cannot be an access point
    adapter = await started(mock_nm)
    try:
        assert (await adapter.observe(SPEC)).state == "absent"
        with pytest.raises(ActivationFailed) as caught:
            await adapter.activate_serve(SPEC)
    finally:
        await adapter.close()
    assert caught.value.reason == "no suitable device"
    assert hotspots(mock_nm) == [] and mock_nm.activations() == []


@pytest.mark.parametrize("code, words", [(9, "no secrets"), (6, "connection attempt timed out"),
                                         (5, "IP configuration invalid")])
async def test_activation_failure_reason_in_words(adapter, mock_nm, devices, code, words):  # noqa: F811
    mock_nm.fail_next("Hotspot", code)
    with pytest.raises(ActivationFailed) as caught:
        await adapter.activate_serve(SPEC)
    assert caught.value.reason == words
    assert words in str(caught.value)
    assert (await adapter.observe(SPEC)).state == "inactive"
    await adapter.activate_serve(SPEC)  # the next try works
    assert (await adapter.observe(SPEC)).state == "activated"


async def test_no_suitable_device_from_networkmanager_in_words(adapter, mock_nm, devices):  # noqa: F811
    import dbus

    settings = mock_nm.conn.get_object("org.freedesktop.NetworkManager", "/org/freedesktop/NetworkManager/Settings")
    settings.AddConnection(
        {"connection": {"id": "Office", "uuid": "0d3c7a9e-1111-4222-8333-944445555666", "type": "802-11-wireless",
                        "interface-name": "wlan9"},
         "802-11-wireless": {"ssid": dbus.ByteArray(b"office"), "mode": "infrastructure"}},
        dbus_interface="org.freedesktop.NetworkManager.Settings")
    await wait_wake(adapter, "connection added")
    office = NetworkSettings(serve="Office")
    assert (await adapter.observe(office)).state == "inactive"
    with pytest.raises(ActivationFailed) as caught:
        await adapter.activate_serve(office)
    assert caught.value.reason == "no suitable device"


async def test_idle_observe_makes_no_dbus_calls(adapter, mock_nm, devices):  # noqa: F811
    await adapter.activate_serve(SPEC)
    await asyncio.sleep(0.3)  # the activation's last device signals
    await adapter.observe(SPEC)
    before = adapter.calls
    for _ in range(50):
        assert (await adapter.observe(SPEC)).state == "activated"
    assert adapter.calls == before


async def test_template_add_and_activate_honours_ap_mode(mock_nm, devices):  # noqa: F811
    """The gap RECIPES.md names: the stock template ignored mode=ap in AddAndActivateConnection."""
    from tests.support.nm import NMClient

    eth, wifi = devices
    wanted = nms.hotspot_settings(SPEC.hotspot, UUID, "Hotspot", "wlan0")
    async with NMClient(mock_nm.bus.address) as client:
        conn, active = await client.call("/org/freedesktop/NetworkManager", "org.freedesktop.NetworkManager",
                                         "AddAndActivateConnection", "a{sa{sv}}oo", wanted, wifi, "/")
        settings = await client.call(conn, "org.freedesktop.NetworkManager.Settings.Connection", "GetSettings")
    assert settings["802-11-wireless"]["mode"] == Variant("s", "ap")
    assert mock_nm.activations() == [(conn, wifi)]


async def test_invalid_hotspot_is_absent_and_activation_says_why(adapter, mock_nm):  # noqa: F811
    from conjuringd.config.problems import ConfigError

    bad = NetworkSettings(serve="Hotspot", hotspot=HotspotSettings(ssid="Room", passphrase="12345678", band="a",
                                                                   channel=144))
    assert (await adapter.observe(bad)).state == "absent"
    with pytest.raises(ConfigError, match="channel 144 is not valid"):
        await adapter.activate_serve(bad)
    assert hotspots(mock_nm) == [] and mock_nm.activations() == []
