"""conjuring.toml: unknown keys, types, values, the machine/folder merge, and the documented defaults."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from conjuringd.config.load import load_custom
from conjuringd.config.model import Settings
from conjuringd.config.problems import Severity
from conjuringd.config.settings import all_keys, key_lines, parse_settings

FILE = "custom/conjuring.toml"
REPO = Path(__file__).resolve().parents[2]


def one_problem(text: str, machine: bool = True):
    settings, problems = parse_settings(text.encode(), FILE, machine=machine)
    assert len(problems) == 1, problems
    assert problems[0].file == FILE
    return settings, problems[0]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("[hub]\nprot = 8000\n", 2, "unknown key 'prot' in [hub] (did you mean 'port'?)"),
        ("\n[netwrok]\nserve = 'x'\n", 2, "unknown key 'netwrok' at the top level (did you mean 'network'?)"),
        ("port = 80\n", 1, "unknown key 'port' at the top level (did you mean 'port' in [hub]?)"),
        ("[network.hotspot]\npassphrse = 'abcdefgh'\n", 2, "unknown key 'passphrse' in [network.hotspot] (did you mean 'passphrase'?)"),
        ("[hub]\nzzz = 1\n", 2, "unknown key 'zzz' in [hub] (valid keys: port, "),
        ("[hub]\nport = '8000'\n", 2, '[hub] port: should be a whole number, not "8000"'),
        ("[hub]\nport = true\n", 2, "[hub] port: should be a whole number, not true"),
        ("[hub]\nprewarm = 1\n", 2, "[hub] prewarm: should be true or false, not 1"),
        ("[hub]\ncpu_limit = 'lots'\n", 2, "[hub] cpu_limit: should be a number"),
        ("[usb]\naccept = 'usb'\n", 2, "[usb] accept: should be a list of strings"),
        ("hub = 3\n", 1, "hub should be a table [hub]"),
        ("[hub]\nport = 0\n", 2, "[hub] port: 0 is out of range (1..65535)"),
        ("[hub]\nport = 70000\n", 2, "[hub] port: 70000 is out of range (1..65535)"),
        ("[hub]\nmem_limit = 'lots'\n", 2, '[hub] mem_limit: "lots" is not a size like "512M" or "2G"'),
        ("[hub]\nhome_dir = 'rel/path'\n", 2, "[hub] home_dir: should be an absolute path"),
        ("[hub]\nprewarm_until = '25:00'\n", 2, '[hub] prewarm_until: "25:00" is not a time of day like "08:30"'),
        ("[hub]\nswitch_at = '9am'\n", 2, '[hub] switch_at: "9am" is not a time of day like "12:30"'),
        ("[hub]\nswitch_idle = -1\n", 2, "[hub] switch_idle: should be at least 0"),
        ("[hub]\npreload = ['numpy', 'no-dash']\n", 2, '[hub] preload: "no-dash" is not a module name like "numpy"'),
        ("[hub]\npreload = 'numpy'\n", 2, "[hub] preload: should be a list of strings"),
        ("[hub]\nkeep_images = 0\n", 2, "[hub] keep_images: should be at least 1"),
        ("[network]\nserve = ''\n", 2, "[network] serve: should name a NetworkManager connection"),
        ("[network.hotspot]\npassphrase = 'short'\n", 2, "a WPA passphrase needs 8 to 63 characters, this one has 5"),
        ("[network.hotspot]\npassphrase = '" + "x" * 64 + "'\n", 2, "a 64-character WPA key must be hexadecimal"),
        ("[network.hotspot]\npassphrase = '" + "x" * 65 + "'\n", 2, "a WPA passphrase needs 8 to 63 characters, this one has 65"),
        ("[network.hotspot]\npassphrase = 'pässwörd'\n", 2, "only printable ASCII"),
        ("[network.hotspot]\nssid = '" + "é" * 17 + "'\n", 2, "an SSID is at most 32 bytes, this one has 34"),
        ("[network.hotspot]\nband = 'n'\n", 2, '[network.hotspot] band: should be "bg" (2.4 GHz) or "a" (5 GHz), not "n"'),
        ("[network.hotspot]\nchannel = 36\n", 2, "[network.hotspot] channel 36 is not a 2.4 GHz"),
        ("[network.hotspot]\nband = 'a'\nchannel = 6\n", 3, "[network.hotspot] channel 6 is not a 5 GHz"),
        ("[network.hotspot]\nband = 'a'\nchannel = 177\n", 3, "[network.hotspot] channel 177 is not a 5 GHz"),
        ("[network.hotspot]\ncountry = 'GBR'\n", 2, "should be a two-letter country code"),
        ("[usb]\naccept = ['usb', 'floppy']\n", 2, "unknown kind 'floppy'"),
        ("[hub]\nport = \n", 2, "TOML syntax error: Invalid value"),
        ("[hub\n", 1, "TOML syntax error"),
        ("[hub]\nport = 1\nport = 2\n", 3, "TOML syntax error"),
    ],
)
def test_settings_problem(text: str, line: int, message: str):
    settings, problem = one_problem(text)
    assert problem.severity is Severity.ERROR
    assert problem.line == line
    assert message in problem.message


def test_bad_values_fall_back_to_defaults_and_good_ones_apply():
    settings, problems = parse_settings(b"[hub]\nport = 'x'\nidle_timeout = 60\ncpu_limit = 2\n", FILE)
    assert len(problems) == 1
    assert settings.hub.port == 8989 and settings.hub.idle_timeout == 60
    assert settings.hub.cpu_limit == 2.0 and isinstance(settings.hub.cpu_limit, float)


def test_not_utf8_says_where():
    _, problems = parse_settings(b"[hub]\n# caf\xe9\n", FILE)
    assert [(p.line, p.severity) for p in problems] == [(2, Severity.ERROR)]
    assert "not valid UTF-8" in problems[0].message


def test_usb_section_from_a_folder_is_ignored_with_a_warning(make_custom, tmp_path):
    machine = tmp_path / "machine.toml"
    machine.write_text("[usb]\nmax_files = 50\naccept = ['loop']\n")
    folder = make_custom({"conjuring.toml": "[hub]\nport = 8080\n\n[usb]\naccept = ['any']\nenabled = true\n"})
    config, problems = load_custom(folder, machine)
    assert config is not None
    assert config.settings.usb.accept == ("loop",) and config.settings.usb.max_files == 50
    assert config.settings.hub.port == 8080
    assert [(p.file, p.line, p.severity) for p in problems] == [
        (FILE, 5, Severity.WARNING), (FILE, 6, Severity.WARNING),
    ]
    assert "[usb] accept ignored: [usb] settings (the USB policy) are honoured only from the machine's" in problems[0].message


def test_folder_overrides_machine_key_by_key(make_custom, tmp_path):
    machine = tmp_path / "machine.toml"
    machine.write_text("[hub]\nport = 8000\nidle_timeout = 10\n[network.hotspot]\nssid = 'Room 1'\ncountry = 'GB'\n")
    folder = make_custom({"conjuring.toml": "[hub]\nport = 9000\n[network.hotspot]\nssid = 'Room 2'\n"})
    config, problems = load_custom(folder, machine)
    assert problems == ()
    assert (config.settings.hub.port, config.settings.hub.idle_timeout) == (9000, 10)
    assert (config.settings.network.hotspot.ssid, config.settings.network.hotspot.country) == ("Room 2", "GB")
    assert config.toml == b"[hub]\nport = 9000\n[network.hotspot]\nssid = 'Room 2'\n"


def test_machine_file_problems_carry_its_path(make_custom, tmp_path):
    machine = tmp_path / "conjuring.toml"
    machine.write_text("[hub]\n\nport = 'eighty'\n")
    config, problems = load_custom(make_custom(), machine)
    assert config is None
    assert [(p.file, p.line) for p in problems] == [(str(machine), 3)]


def test_missing_machine_file_is_fine(make_custom, tmp_path):
    config, problems = load_custom(make_custom(), tmp_path / "absent.toml")
    assert config is not None and problems == ()
    assert config.settings == Settings()


def test_channel_checked_against_the_merged_band(make_custom, tmp_path):
    machine = tmp_path / "machine.toml"
    machine.write_text("[network.hotspot]\nband = 'a'\nchannel = 36\n")
    config, problems = load_custom(make_custom({"conjuring.toml": "[network.hotspot]\nband = 'bg'\n"}), machine)
    assert config is None
    assert [(p.file, p.line) for p in problems] == [(FILE, 2)]


def test_key_lines_handles_dotted_keys_and_headers():
    text = "# c\n[network]\nhotspot.ssid = 'x'\n[ hub ]  # comment\nport=1\n"
    lines = key_lines(text)
    assert lines[("network", "hotspot", "ssid")] == 3
    assert lines[("hub", "port")] == 5


# --- the shipped custom/conjuring.toml documents every key with its default ---------


def documented_defaults() -> dict:
    text = (REPO / "custom" / "conjuring.toml").read_text()
    lines = [line[1:] for line in text.splitlines() if re.match(r"#[\[a-z]", line)]
    return tomllib.loads("\n".join(lines))


def test_shipped_conjuring_toml_documents_every_key_with_its_default():
    documented = documented_defaults()
    for path, default in all_keys():
        table = documented
        for part in path[:-1]:
            assert part in table, f"[{'.'.join(path[:-1])}] is not documented in custom/conjuring.toml"
            table = table[part]
        assert path[-1] in table, f"{'.'.join(path)} is not documented in custom/conjuring.toml"
        value = table[path[-1]]
        assert (tuple(value) if isinstance(value, list) else value) == default, f"{'.'.join(path)}: documented {value!r}, default {default!r}"


def test_shipped_conjuring_toml_documents_nothing_else():
    documented = documented_defaults()
    known = {path for path, _ in all_keys()}

    def leaves(table: dict, path: tuple = ()):
        for key, value in table.items():
            yield from leaves(value, path + (key,)) if isinstance(value, dict) else [path + (key,)]

    assert set(leaves(documented)) == known


def test_uncommented_documentation_is_a_valid_machine_file():
    text = "\n".join(line[1:] if re.match(r"#[\[a-z]", line) else line
                     for line in (REPO / "custom" / "conjuring.toml").read_text().splitlines())
    settings, problems = parse_settings(text.encode(), "/etc/conjuring/conjuring.toml")
    assert problems == [] and settings == Settings()


def test_raw_64_hex_wpa_key_is_accepted():
    settings, problems = parse_settings(b"[network.hotspot]\npassphrase = '" + b"ab12" * 16 + b"'\n", FILE)
    assert problems == [] and settings.network.hotspot.passphrase == "ab12" * 16


def test_channel_table_matches_the_networkmanager_adapter():
    from conjuringd.adapters import nm_settings
    from conjuringd.config import settings as config_settings

    assert config_settings.CHANNELS == nm_settings.CHANNELS


def test_a_valid_hotspot_section_passes_both_validators():
    from conjuringd.adapters.nm_settings import hotspot_problems

    text = b"[network.hotspot]\nssid = 'Room 101'\npassphrase = 'correct horse'\nband = 'a'\nchannel = 36\ncountry = 'GB'\n"
    settings, problems = parse_settings(text, FILE)
    assert problems == [] and hotspot_problems(settings.network.hotspot) == ()


def test_parse_settings_accepts_parsed_data_too():
    settings, problems = parse_settings({"hub": {"port": 8000, "prot": 1}}, "x.toml")
    assert settings.hub.port == 8000
    assert [(p.file, p.line) for p in problems] == [("x.toml", 0)] and "did you mean 'port'" in problems[0].message
