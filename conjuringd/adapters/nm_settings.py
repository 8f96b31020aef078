"""Pure NetworkManager translations: hotspot settings, validation, code tables, hub URLs.

Nothing here talks to D-Bus; the adapter in `nm.py` does. Settings dicts are in
NetworkManager's `a{sa{sv}}` form with dbus_next `Variant`s.
"""

from __future__ import annotations

import uuid

from dbus_next import Variant

from conjuringd.config import settings as config_settings
from conjuringd.config.model import HotspotSettings
from conjuringd.config.problems import ConfigError, Problem, error
from conjuringd.reconcile.model import NetworkObserved
from conjuringd.urls import serve_urls

CONFIG_FILE = "conjuring.toml"
UUID_NAMESPACE = uuid.UUID("5d1b1f0e-8a0c-4c36-9a57-2c6b1e0c7a11")  # conjuringd's own, never change

# Channels NetworkManager 1.42 accepts per band: one table, kept in the configuration validator
# (checked against the real NetworkManager in tests/integration/test_nm_real.py).
CHANNELS = config_settings.CHANNELS

# NMActiveConnectionState
AC_UNKNOWN, AC_ACTIVATING, AC_ACTIVATED, AC_DEACTIVATING, AC_DEACTIVATED = range(5)
ACTIVE_STATE_WORDS = {0: "unknown", 1: "activating", 2: "activated", 3: "deactivating", 4: "deactivated"}

# NMActiveConnectionStateReason
ACTIVE_REASON_WORDS = {
    0: "unknown reason",
    1: "no reason given",
    2: "disconnected by the user",
    3: "the device disconnected",
    4: "the VPN service stopped",
    5: "IP configuration invalid",
    6: "connection attempt timed out",
    7: "the VPN service did not start in time",
    8: "the VPN service failed to start",
    9: "no secrets",
    10: "login failed",
    11: "connection removed",
    12: "a connection it depends on failed",
    13: "the device could not be created",
    14: "the device was removed",
}

# NMDeviceState
DEVICE_STATE_WORDS = {
    0: "unknown", 10: "unmanaged", 20: "unavailable", 30: "disconnected", 40: "preparing",
    50: "configuring", 60: "needs authentication", 70: "getting IP configuration",
    80: "checking IP connectivity", 90: "waiting for secondaries", 100: "activated",
    110: "deactivating", 120: "failed",
}
DEVICE_FAILED = 120

# NMDeviceStateReason (the ones a classroom box can meet)
DEVICE_REASON_WORDS = {
    0: "no reason given", 1: "unknown error", 2: "now managed", 3: "now unmanaged",
    4: "device configuration failed", 5: "IP configuration unavailable", 6: "IP configuration expired",
    7: "no secrets", 8: "Wi-Fi supplicant disconnected", 9: "Wi-Fi supplicant configuration failed",
    10: "Wi-Fi supplicant failed", 11: "Wi-Fi supplicant timed out", 15: "DHCP client failed to start",
    16: "DHCP client error", 17: "DHCP client failed", 18: "shared connection service failed to start",
    19: "shared connection service failed", 35: "firmware missing", 36: "device removed",
    37: "NetworkManager went to sleep", 38: "connection removed", 39: "disconnected by the user",
    40: "carrier changed", 41: "connection assumed", 42: "Wi-Fi supplicant available",
    50: "a connection it depends on failed", 53: "SSID not found", 54: "secondary connection failed",
    60: "a new activation was requested", 64: "IP address already in use",
    65: "IP method unsupported",
}

# D-Bus error names NetworkManager answers ActivateConnection with, in words.
DBUS_ERROR_WORDS = {
    "org.freedesktop.NetworkManager.UnknownDevice": "no suitable device",
    "org.freedesktop.NetworkManager.UnknownConnection": "unknown connection",
    "org.freedesktop.NetworkManager.ConnectionNotAvailable": "connection not available on the device",
    "org.freedesktop.NetworkManager.PermissionDenied": "permission denied",
    "org.freedesktop.NetworkManager.Settings.InvalidProperty": "invalid setting",
    "org.freedesktop.NetworkManager.Settings.InvalidConnection": "invalid connection",
    "org.freedesktop.NetworkManager.Settings.MissingProperty": "missing setting",
    "org.freedesktop.NetworkManager.Settings.PermissionDenied": "permission denied",
    "org.freedesktop.NetworkManager.Device.IncompatibleConnection": "connection incompatible with the device",
}

# NMDeviceType, NMDeviceWifiCapabilities
DEVICE_TYPE_ETHERNET = 1
DEVICE_TYPE_WIFI = 2
WIFI_CAP_AP = 0x40
WIFI_CAP_FREQ_VALID = 0x100
WIFI_CAP_FREQ_5GHZ = 0x400


def active_reason_words(code: int) -> str:
    return ACTIVE_REASON_WORDS.get(code, f"reason {code}")


def device_reason_words(code: int) -> str:
    return DEVICE_REASON_WORDS.get(code, f"reason {code}")


def dbus_error_words(name: str) -> str:
    return DBUS_ERROR_WORDS.get(name, name.rsplit(".", 1)[-1] or "error")


def hotspot_uuid(name: str) -> str:
    """The deterministic UUID of the hotspot connection named `name` (found again after restarts)."""
    return str(uuid.uuid5(UUID_NAMESPACE, f"hotspot:{name}"))


def _passphrase_problem(passphrase: str) -> str:
    if len(passphrase) == 64:
        if all(c in "0123456789abcdefABCDEF" for c in passphrase):
            return ""
        return "a 64-character WPA key must be hexadecimal"
    if not 8 <= len(passphrase) <= 63:
        return f"a WPA passphrase needs 8 to 63 characters, this one has {len(passphrase)}"
    if not all(0x20 <= ord(c) < 0x7F for c in passphrase):
        return "a WPA passphrase may contain only printable ASCII characters"
    return ""


def hotspot_problems(spec: HotspotSettings) -> tuple[Problem, ...]:
    """Every reason NetworkManager would refuse (or we would not want) this hotspot."""
    found: list[str] = []
    ssid = spec.ssid.encode("utf-8")
    if not 1 <= len(ssid) <= 32:
        found.append(f"[network.hotspot] ssid must be 1 to 32 bytes, it has {len(ssid)}")
    problem = _passphrase_problem(spec.passphrase)
    if problem:
        found.append(f"[network.hotspot] passphrase: {problem}")
    if spec.band not in CHANNELS:
        found.append(f'[network.hotspot] band must be "bg" (2.4 GHz) or "a" (5 GHz), not "{spec.band}"')
    elif spec.channel and spec.channel not in CHANNELS[spec.band]:
        found.append(f"[network.hotspot] channel {spec.channel} is not valid in band {spec.band!r}")
    if spec.channel < 0:
        found.append(f"[network.hotspot] channel must not be negative ({spec.channel})")
    if spec.country and not (len(spec.country) == 2 and spec.country.isascii() and spec.country.isalpha()):
        found.append(f"[network.hotspot] country must be a two-letter ISO 3166 code, not {spec.country!r}")
    return tuple(error(CONFIG_FILE, 0, message) for message in found)


def hotspot_settings(spec: HotspotSettings, uuid: str, conn_id: str, interface: str | None) -> dict:
    """The `a{sa{sv}}` of a WPA2-PSK access point with a shared IPv4 network.

    Raises ConfigError before NetworkManager ever sees an invalid spec. The
    country code is validated only: NetworkManager has no setting for the
    regulatory domain.
    """
    problems = hotspot_problems(spec)
    if problems:
        raise ConfigError(problems)
    connection = {
        "id": Variant("s", conn_id),
        "uuid": Variant("s", uuid),
        "type": Variant("s", "802-11-wireless"),
        "autoconnect": Variant("b", False),
    }
    if interface:
        connection["interface-name"] = Variant("s", interface)
    return {
        "connection": connection,
        "802-11-wireless": {
            "ssid": Variant("ay", spec.ssid.encode("utf-8")),
            "mode": Variant("s", "ap"),
            "band": Variant("s", spec.band),
            "channel": Variant("u", spec.channel),
        },
        "802-11-wireless-security": {
            "key-mgmt": Variant("s", "wpa-psk"),
            "psk": Variant("s", spec.passphrase),
            "proto": Variant("as", ["rsn"]),
            "pairwise": Variant("as", ["ccmp"]),
            "group": Variant("as", ["ccmp"]),
        },
        "ipv4": {"method": Variant("s", "shared")},
        "ipv6": {"method": Variant("s", "ignore")},
    }


# Keys NetworkManager leaves out of GetSettings when they hold their default.
_DEFAULTS = {("802-11-wireless", "channel"): 0, ("connection", "autoconnect"): True}


def plain(settings: dict) -> dict:
    """{setting: {key: value}} with Variants unwrapped (bytes stay bytes)."""
    return {
        name: {key: (value.value if isinstance(value, Variant) else value) for key, value in group.items()}
        for name, group in settings.items()
    }


def settings_differ(wanted: dict, current: dict) -> tuple[str, ...]:
    """The `setting.key` names whose value in `current` is not the one `wanted` (both may hold Variants)."""
    want, have = plain(wanted), plain(current)
    differ = []
    for name, group in want.items():
        for key, value in group.items():
            default = _DEFAULTS.get((name, key))
            actual = have.get(name, {}).get(key, default)
            if isinstance(actual, (list, tuple)):
                actual, value = list(actual), list(value)
            if actual != value:
                differ.append(f"{name}.{key}")
    return tuple(differ)


def ssid_text(raw: bytes | list | None) -> str:
    if not raw:
        return ""
    return bytes(raw).decode("utf-8", errors="replace")


def serving_status(observed: NetworkObserved | None, port: int) -> str:
    """One line for STATUS= and `conjuringctl status`."""
    if observed is None or observed.state == "unmanaged":
        return "network not managed"
    name = observed.serve + (f" (SSID {observed.ssid})" if observed.ssid else "")
    urls = serve_urls(observed, port)
    if urls:
        return f"serving at {', '.join(urls)} on {name}"
    return f"serve network {name} is {observed.state}"
