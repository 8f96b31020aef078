"""The `conjuringd` console command checks for the daemon-only libraries before importing the daemon."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conjuringd import entry


def test_here_every_daemon_library_is_present_and_the_daemon_starts():
    assert entry.missing_libraries() == []
    done = subprocess.run([sys.executable, "-c", "from conjuringd.entry import main; main(['--help'])"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--state-dir" in done.stdout, done.stderr


def test_a_missing_library_is_named_in_one_line_with_the_extra_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name in ("docker", "watchdog") else real(name))
    with pytest.raises(SystemExit) as stop:
        entry.main(["--hub", "none"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing here: docker, watchdog;" in err and "pip install 'conjuringd[daemon]'" in err


def test_the_libraries_are_those_of_the_daemon_extra():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    extra = [spec.split(">")[0].split("=")[0] for spec in project["optional-dependencies"]["daemon"]]
    assert list(entry.DAEMON_LIBRARIES.values()) == extra
    assert project["scripts"]["conjuringd"] == "conjuringd.entry:main"
