"""Pure NetworkManager translations: hotspot dict, validation, uuid5, words, hub URLs."""

from __future__ import annotations

import string
import uuid

import pytest
from dbus_next import Variant
from hypothesis import given
from hypothesis import strategies as st

from conjuringd.adapters import nm_settings as nms
from conjuringd.config.model import HotspotSettings
from conjuringd.config.problems import ConfigError
from conjuringd.reconcile.model import NetworkObserved
from conjuringd.urls import serve_urls

GOOD = HotspotSettings(ssid="Classroom", passphrase="turnip-lantern", band="bg", channel=6, country="GB")


def test_hotspot_settings_shape():
    settings = nms.hotspot_settings(GOOD, "u-1", "Hotspot", "wlan0")
    assert settings["connection"] == {
        "id": Variant("s", "Hotspot"), "uuid": Variant("s", "u-1"), "type": Variant("s", "802-11-wireless"),
        "autoconnect": Variant("b", False), "interface-name": Variant("s", "wlan0"),
    }
    wireless = settings["802-11-wireless"]
    assert wireless["ssid"] == Variant("ay", b"Classroom")
    assert wireless["mode"] == Variant("s", "ap")
    assert (wireless["band"], wireless["channel"]) == (Variant("s", "bg"), Variant("u", 6))
    security = settings["802-11-wireless-security"]
    assert security["key-mgmt"] == Variant("s", "wpa-psk") and security["psk"] == Variant("s", "turnip-lantern")
    assert security["proto"] == Variant("as", ["rsn"])
    assert settings["ipv4"] == {"method": Variant("s", "shared")}
    assert settings["ipv6"] == {"method": Variant("s", "ignore")}


def test_no_interface_means_not_bound():
    assert "interface-name" not in nms.hotspot_settings(GOOD, "u", "Hotspot", None)["connection"]


def test_hotspot_uuid_is_deterministic_version5_and_per_name():
    first = nms.hotspot_uuid("Hotspot")
    assert first == nms.hotspot_uuid("Hotspot")
    assert uuid.UUID(first).version == 5
    assert first != nms.hotspot_uuid("Hotspot 2")


@pytest.mark.parametrize("spec, fragment", [
    (HotspotSettings(ssid="", passphrase="12345678"), "ssid must be 1 to 32 bytes, it has 0"),
    (HotspotSettings(ssid="é" * 17, passphrase="12345678"), "it has 34"),
    (HotspotSettings(ssid="Room", passphrase="1234567"), "8 to 63 characters, this one has 7"),
    (HotspotSettings(ssid="Room", passphrase="x" * 64), "must be hexadecimal"),
    (HotspotSettings(ssid="Room", passphrase="pass wörter"), "printable ASCII"),
    (HotspotSettings(ssid="Room", passphrase="12345678", band="n"), 'band must be "bg"'),
    (HotspotSettings(ssid="Room", passphrase="12345678", band="bg", channel=36), "channel 36 is not valid"),
    (HotspotSettings(ssid="Room", passphrase="12345678", band="a", channel=6), "channel 6 is not valid"),
    (HotspotSettings(ssid="Room", passphrase="12345678", band="a", channel=144), "channel 144 is not valid"),
    (HotspotSettings(ssid="Room", passphrase="12345678", country="GBR"), "two-letter"),
])
def test_invalid_specs_rejected_before_networkmanager(spec, fragment):
    problems = nms.hotspot_problems(spec)
    assert any(fragment in p.message for p in problems), problems
    assert all(p.file == "conjuring.toml" for p in problems)
    with pytest.raises(ConfigError):
        nms.hotspot_settings(spec, "u", "Hotspot", None)


def test_hex_key_and_auto_channel_are_valid():
    assert nms.hotspot_problems(HotspotSettings(ssid="R", passphrase="ab" * 32)) == ()
    assert nms.hotspot_problems(HotspotSettings(ssid="R", passphrase="12345678", band="a", channel=0)) == ()
    assert nms.hotspot_problems(HotspotSettings(ssid="R", passphrase="12345678", band="a", channel=36)) == ()


@given(
    ssid=st.text(min_size=1, max_size=32).filter(lambda s: 1 <= len(s.encode()) <= 32),
    passphrase=st.text(alphabet=string.printable[:94] + " ", min_size=8, max_size=63),
    band=st.sampled_from(["bg", "a"]),
    data=st.data(),
)
def test_any_valid_spec_builds(ssid, passphrase, band, data):
    channel = data.draw(st.sampled_from([0, *sorted(nms.CHANNELS[band])]))
    spec = HotspotSettings(ssid=ssid, passphrase=passphrase, band=band, channel=channel)
    settings = nms.hotspot_settings(spec, "u", "Hotspot", None)
    assert settings["802-11-wireless"]["ssid"].value.decode() == ssid
    assert nms.settings_differ(settings, nms.plain(settings)) == ()


@given(st.integers(min_value=0, max_value=100))
def test_passphrase_length_rule(length):
    problems = nms.hotspot_problems(HotspotSettings(ssid="R", passphrase="z" * length))  # not hex: 64 is no key
    assert bool(problems) == (not 8 <= length <= 63)


def test_settings_differ_names_the_keys_and_knows_networkmanager_defaults():
    wanted = nms.hotspot_settings(HotspotSettings(ssid="R", passphrase="12345678"), "u", "H", "wlan0")
    stored = nms.plain(wanted)
    del stored["802-11-wireless"]["channel"]  # NetworkManager leaves defaults out of GetSettings
    stored["802-11-wireless"]["ssid"] = list(b"R")  # ay may come back as a list
    assert nms.settings_differ(wanted, stored) == ()
    stored["802-11-wireless-security"]["psk"] = "other-pass"
    stored["connection"]["autoconnect"] = True
    assert nms.settings_differ(wanted, stored) == ("connection.autoconnect", "802-11-wireless-security.psk")
    assert nms.settings_differ(wanted, {}) != ()


def test_words_for_codes():
    assert nms.active_reason_words(9) == "no secrets"
    assert nms.active_reason_words(6) == "connection attempt timed out"
    assert nms.active_reason_words(99) == "reason 99"
    assert nms.device_reason_words(53) == "SSID not found"
    assert nms.dbus_error_words("org.freedesktop.NetworkManager.UnknownDevice") == "no suitable device"
    assert nms.dbus_error_words("org.example.Weird") == "Weird"


def test_hub_urls_and_status():
    up = NetworkObserved("Hotspot", "activated", addresses=("10.42.0.1", "fd00::1"), ssid="Room 4")
    assert serve_urls(up, 8989) == ("http://10.42.0.1:8989", "http://[fd00::1]:8989")
    assert nms.serving_status(up, 8989) == (
        "serving at http://10.42.0.1:8989, http://[fd00::1]:8989 on Hotspot (SSID Room 4)")
    down = NetworkObserved("Hotspot", "activating", addresses=("10.42.0.1",))
    assert serve_urls(down, 8989) == ()
    assert nms.serving_status(down, 8989) == "serve network Hotspot is activating"
    assert serve_urls(None, 8989) == ()
    assert nms.serving_status(NetworkObserved("none", "unmanaged"), 80) == "network not managed"


def test_ssid_text():
    assert nms.ssid_text(b"Room") == "Room"
    assert nms.ssid_text([82, 111]) == "Ro"
    assert nms.ssid_text(None) == ""
