"""Who may set what: a folder's (a stick's) conjuring.toml may set only the allow-listed keys."""

from __future__ import annotations

import pytest

from conjuringd.config.allow import classification, machine_only
from conjuringd.config.load import load_custom
from conjuringd.config.model import Settings
from conjuringd.config.problems import Severity
from conjuringd.config.settings import all_keys, parse_settings

FILE = "custom/conjuring.toml"
MACHINE_KEYS = {("hub", "home_dir"), ("hub", "gpus"), ("network", "captive_portal")} | {
    path for path, _ in all_keys() if path[0] == "usb"}


@pytest.mark.parametrize("path", [path for path, _ in all_keys()], ids=lambda p: ".".join(p))
def test_every_schema_key_is_classified_exactly_once(path):
    assert len(classification(path)) == 1, classification(path)


def test_machine_only_keys_are_the_usb_policy_host_paths_host_devices_and_port_80():
    assert {path for path, _ in all_keys() if machine_only(path)} == MACHINE_KEYS


def test_a_key_nobody_classified_is_machine_only():
    assert machine_only(("hub", "some_new_host_device"))
    assert machine_only(("newsection", "key"))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"/srv/elsewhere"' if value == "" else f'"{value}"'
    if isinstance(value, tuple):
        return '["loop"]'
    return str(value if value else 7)


@pytest.mark.parametrize("path", sorted(MACHINE_KEYS), ids=lambda p: ".".join(p))
def test_a_folder_setting_a_machine_only_key_gets_a_warning_and_no_effect(path):
    value = {"accept": '["any"]', "max_files": "1", "max_bytes": "1", "enabled": "false", "backup": "false",
             "trust": "\"any\"", "max_file_bytes": "1", "gpus": "\"all\"", "captive_portal": "false"}.get(
        path[-1], _toml_value(dict(all_keys())[path]))
    text = f"[{'.'.join(path[:-1])}]\n{path[-1]} = {value}\n"
    machine_view, _ = parse_settings(text.encode(), FILE, machine=True)
    assert machine_view != Settings(), "the test value must differ from the default"
    settings, problems = parse_settings(text.encode(), FILE, machine=False)
    assert settings == Settings()
    assert [(p.severity, p.line) for p in problems] == [(Severity.WARNING, 2)]
    assert f"[{'.'.join(path[:-1])}] {path[-1]} ignored" in problems[0].message
    assert "honoured only from the machine's /etc/conjuring/conjuring.toml" in problems[0].message


def test_home_dir_on_a_stick_is_ignored_and_the_machine_home_dir_stays(make_custom, tmp_path):
    machine = tmp_path / "machine.toml"
    machine.write_text('[hub]\nhome_dir = "/srv/homes"\n')
    folder = make_custom({"conjuring.toml": '[hub]\nidle_timeout = 60\nhome_dir = "/"\n'})
    config, problems = load_custom(folder, machine)
    assert config is not None
    assert config.settings.hub.home_dir == "/srv/homes" and config.settings.hub.idle_timeout == 60
    assert [str(p) for p in problems] == [
        "custom/conjuring.toml:3: warning: [hub] home_dir ignored: it names a host folder, so it is honoured only "
        "from the machine's /etc/conjuring/conjuring.toml"
    ]


@pytest.mark.parametrize("port, applied", [(80, False), (443, False), (1023, False), (1024, True), (8000, True)])
def test_a_folder_may_set_only_unprivileged_ports(port, applied):
    settings, problems = parse_settings(f"[hub]\nport = {port}\n".encode(), FILE, machine=False)
    assert settings.hub.port == (port if applied else 8989)
    if applied:
        assert problems == []
    else:
        assert [(p.severity, p.line) for p in problems] == [(Severity.WARNING, 2)]
        assert f"[hub] port = {port} ignored: ports below 1024" in problems[0].message
    machine, problems = parse_settings(f"[hub]\nport = {port}\n".encode(), FILE, machine=True)
    assert machine.hub.port == port and problems == []


def test_a_whole_machine_only_table_warns_per_key_and_unknown_keys_stay_errors():
    text = b"[usb]\nenabled = false\naccept = ['any']\n[hub]\nhom_dir = '/'\n"
    settings, problems = parse_settings(text, FILE, machine=False)
    assert settings == Settings()
    assert sorted((p.line, p.severity) for p in problems) == [
        (2, Severity.WARNING), (3, Severity.WARNING), (5, Severity.ERROR)]


def test_the_folder_may_still_set_every_allowed_key():
    text = (b"[hub]\nport = 9000\nidle_timeout = 5\nmem_limit = '1G'\npreload = ['numpy']\n"
            b"[network]\nserve = 'Classroom'\n[network.hotspot]\nssid = 'Room 4'\npassphrase = 'abcdefgh'\n")
    settings, problems = parse_settings(text, FILE, machine=False)
    assert problems == []
    assert (settings.hub.port, settings.hub.mem_limit, settings.network.serve, settings.network.hotspot.ssid) == (
        9000, "1G", "Classroom", "Room 4")
