"""The adapter's pure choices: which connection serves, which device may be an access point."""

from __future__ import annotations

from conjuringd.adapters import nm_settings as nms
from conjuringd.adapters.nm import Active, Conn, Device, NetworkManagerAdapter as A
from conjuringd.config.model import HotspotSettings, NetworkSettings

ETH = Device("/d/1", "eth0", nms.DEVICE_TYPE_ETHERNET, 0, "/")
WIFI_CLIENT = Device("/d/2", "wlan0", nms.DEVICE_TYPE_WIFI, 0x3F, "/")  # no AP capability
WIFI_AP_24 = Device("/d/3", "wlan1", nms.DEVICE_TYPE_WIFI, 0x40 | 0x100 | 0x200, "/")
WIFI_AP_5 = Device("/d/4", "wlan2", nms.DEVICE_TYPE_WIFI, 0x40 | 0x100 | 0x200 | 0x400, "/")
HOTSPOT = HotspotSettings(ssid="Room", passphrase="12345678")


def spec(band: str = "bg") -> NetworkSettings:
    return NetworkSettings(serve="Hotspot", hotspot=HotspotSettings(ssid="Room", passphrase="12345678", band=band))


def test_never_an_ethernet_or_a_client_only_device():
    assert A._ap_device((ETH, WIFI_CLIENT), spec(), "") is None


def test_band_a_needs_a_5ghz_radio():
    assert A._ap_device((ETH, WIFI_AP_24, WIFI_AP_5), spec("a"), "") == WIFI_AP_5
    assert A._ap_device((WIFI_AP_24,), spec("a"), "") is None
    assert A._ap_device((ETH, WIFI_AP_5, WIFI_AP_24), spec("bg"), "") == WIFI_AP_24  # by name, stable


def test_prefers_the_interface_the_hotspot_already_uses():
    assert A._ap_device((WIFI_AP_24, WIFI_AP_5), spec(), "wlan2") == WIFI_AP_5


def test_hotspot_found_by_uuid_not_by_a_foreign_connection_of_the_same_name():
    foreign = Conn("/c/1", "Hotspot", "aaaa", "802-11-wireless", "", {})
    ours = Conn("/c/2", "Hotspot", nms.hotspot_uuid("Hotspot"), "802-11-wireless", "wlan0", {})
    assert A._serve_conn((foreign, ours), spec()) == ours
    assert A._serve_conn((foreign,), spec()) is None
    assert A._serve_conn((foreign, ours), NetworkSettings(serve="Hotspot")) == foreign  # no [network.hotspot]


def test_active_of_prefers_the_activated_instance():
    conn = Conn("/c/1", "serve", "u1", "802-3-ethernet", "", {})
    going = Active("/a/1", "/c/1", "serve", "u1", nms.AC_DEACTIVATING, (), ())
    up = Active("/a/2", "/c/1", "serve", "u1", nms.AC_ACTIVATED, (), ("10.0.0.1",))
    other = Active("/a/3", "/c/9", "other", "u9", nms.AC_ACTIVATED, (), ())
    assert A._active_of((going, up, other), conn) == up
    assert A._active_of((other,), conn) is None
