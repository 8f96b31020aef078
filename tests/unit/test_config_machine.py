"""A broken machine conjuring.toml: the last good machine settings (or the defaults) stay in effect."""

from __future__ import annotations

from conjuringd.config.load import load_custom
from conjuringd.config.machine import DEFAULTS, FILE, LAST_GOOD, NONE, MachineSource, load_machine
from conjuringd.config.model import Settings

BROKEN = '[hub]\nport = 8000\nmem_limit = "1 GB"\n'


def test_a_good_machine_file_is_used_and_remembered(tmp_path):
    machine, good = tmp_path / "conjuring.toml", tmp_path / "state" / "machine-good.toml"
    machine.write_text("[hub]\nport = 8000\n")
    settings = load_machine(machine, good)
    assert (settings.source, settings.problems, settings.settings.hub.port) == (FILE, (), 8000)
    assert good.read_text() == "[hub]\nport = 8000\n" and good.stat().st_mode & 0o777 == 0o600


def test_a_broken_machine_file_falls_back_to_the_last_good_one(tmp_path):
    machine, good = tmp_path / "conjuring.toml", tmp_path / "machine-good.toml"
    machine.write_text("[hub]\nport = 8100\n[usb]\naccept = ['loop']\n")
    load_machine(machine, good)
    machine.write_text(BROKEN)
    settings = load_machine(machine, good)
    assert settings.source == LAST_GOOD and settings.broken
    assert settings.settings.hub.port == 8100 and settings.settings.usb.accept == ("loop",)
    assert [(p.line, p.severity.value) for p in settings.problems] == [(3, "error")]
    assert '"1 GB" is not a size' in settings.problems[0].message
    assert settings.summary().startswith(f"{machine} has 1 error(s): running with the last good machine settings")
    assert good.read_text() == "[hub]\nport = 8100\n[usb]\naccept = ['loop']\n", "a broken file is never remembered"


def test_a_broken_machine_file_with_no_good_one_gives_the_defaults(tmp_path):
    machine = tmp_path / "conjuring.toml"
    machine.write_text("[hub\n")
    settings = load_machine(machine, tmp_path / "machine-good.toml")
    assert settings.source == DEFAULTS and settings.settings == Settings() and settings.raw == b""
    assert "default machine settings" in settings.summary()
    assert "TOML syntax error" in settings.problems[0].message


def test_no_machine_file_is_the_defaults_without_problems(tmp_path):
    settings = load_machine(tmp_path / "absent.toml", tmp_path / "good.toml")
    assert (settings.source, settings.problems, settings.broken) == (NONE, (), False)


def test_a_broken_machine_file_never_makes_a_folder_invalid(make_custom, tmp_path):
    machine = tmp_path / "conjuring.toml"
    machine.write_text(BROKEN)
    folder = make_custom({"conjuring.toml": "[hub]\nidle_timeout = 60\n"})
    config, problems = load_custom(folder, load_machine(machine, tmp_path / "good.toml"))
    assert config is not None and problems == ()
    assert config.settings.hub.idle_timeout == 60 and config.settings.hub.mem_limit == ""
    config, problems = load_custom(folder, machine)  # conjuringctl validate --machine-toml: shown, and an error
    assert config is None and [p.file for p in problems] == [str(machine)]


def test_machine_source_rechecks_only_when_the_content_changes(tmp_path):
    machine = tmp_path / "conjuring.toml"
    source = MachineSource(machine, tmp_path / "good.toml")
    assert source.current().source == NONE
    machine.write_text("[hub]\nport = 8200\n")
    first = source.current()
    assert first.settings.hub.port == 8200 and source.current() is first
    machine.write_text(BROKEN)
    broken = source.current()
    assert broken.broken and broken.settings.hub.port == 8200
    machine.write_text("[hub]\nport = 8300\n")
    assert source.current().settings.hub.port == 8300 and not source.current().broken


def test_conjuringctl_status_shows_the_broken_machine_file():
    from conjuringd.ctl import format_status

    text = format_status({"phase": "serving 3 users", "machine_error": "/etc/conjuring/conjuring.toml has 1 error(s)",
                          "machine_problems": ["/etc/conjuring/conjuring.toml:3: error: [hub] mem_limit: bad"]})
    assert "machine:  /etc/conjuring/conjuring.toml has 1 error(s)" in text
    assert "  /etc/conjuring/conjuring.toml:3: error: [hub] mem_limit: bad" in text
