"""NetworkManager missing, appearing late, or the bus itself unreachable: transient, logged once."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from conjuringd.adapters.nm import NetworkManagerAdapter
from conjuringd.config.model import HotspotSettings, NetworkSettings
from conjuringd.config.problems import TransientError
from tests.support.nm import MockNetworkManager, PrivateSystemBus, require_dbusmock

pytestmark = pytest.mark.nm

SPEC = NetworkSettings(serve="Hotspot", hotspot=HotspotSettings(ssid="Room 9", passphrase="pumpkin-owl"))


async def test_bus_unreachable_is_transient(tmp_path):
    adapter = NetworkManagerAdapter(f"unix:path={tmp_path}/no-such-socket")
    await adapter.start(lambda reason: None)  # does not raise: the reconciler backs off on observe
    with pytest.raises(TransientError, match="system bus"):
        await adapter.observe(SPEC)
    await adapter.close()


async def test_networkmanager_missing_then_appearing(tmp_path):
    require_dbusmock()
    bus = PrivateSystemBus(tmp_path).start()
    mock = MockNetworkManager(bus)
    adapter = NetworkManagerAdapter(bus.address, activation_timeout=10)
    wakes: list[str] = []
    try:
        with capture_logs() as logs:
            await adapter.start(wakes.append)
            for _ in range(3):
                with pytest.raises(TransientError, match="not running"):
                    await adapter.observe(SPEC)
        assert [e["event"] for e in logs].count("networkmanager_unavailable") == 1
        assert (await adapter.observe(NetworkSettings(serve="none"))).state == "unmanaged"
        mock.start()
        mock.add_wifi("wlan0")
        for _ in range(500):
            if "network: NetworkManager started" in wakes:
                break
            await asyncio.sleep(0.01)
        assert "network: NetworkManager started" in wakes
        await adapter.activate_serve(SPEC)
        assert (await adapter.observe(SPEC)).state == "activated"
        mock.stop()
        for _ in range(500):
            if "network: NetworkManager stopped" in wakes:
                break
            await asyncio.sleep(0.01)
        assert "network: NetworkManager stopped" in wakes
        with pytest.raises(TransientError):
            await adapter.observe(SPEC)
    finally:
        await adapter.close()
        mock.stop()
        bus.stop()


async def test_default_is_the_system_bus_from_the_environment(tmp_path, monkeypatch):
    require_dbusmock()
    bus = PrivateSystemBus(tmp_path).start()
    mock = MockNetworkManager(bus).start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    adapter = NetworkManagerAdapter()
    try:
        mock.add_wifi("wlan0")
        await adapter.activate_serve(SPEC)
        assert (await adapter.observe(SPEC)).state == "activated"
    finally:
        await adapter.close()
        mock.stop()
        bus.stop()
