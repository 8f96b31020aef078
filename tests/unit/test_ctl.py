"""conjuringctl's offline commands: validate (compiler-style, exit codes) and status formatting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conjuringd import ctl

DATA = Path(__file__).parent / "data"


def run(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        ctl.main(list(argv))
    captured = capsys.readouterr()
    run.err = captured.err
    return exited.value.code, captured.out


def test_validate_original_format_exits_zero(capsys):
    code, out = run(capsys, "validate", str(DATA / "original" / "custom"))
    assert code == 0
    assert out.strip().splitlines()[-1] == "0 error(s), 2 warning(s)"  # the original's example passwords


def test_validate_broken_folder_prints_one_line_per_problem_and_exits_one(capsys):
    code, out = run(capsys, "validate", str(DATA / "broken" / "custom"))
    assert code == 1
    lines = out.strip().splitlines()
    problems, summary = lines[:-1], lines[-1]
    assert all(line.startswith("custom/") and (": error: " in line or ": warning: " in line) for line in problems)
    errors = sum(": error: " in line for line in problems)
    assert summary == f"{errors} error(s), {len(problems) - errors} warning(s)"
    assert any(line.startswith("custom/users.csv:5: error: duplicate user") for line in problems)


def test_validate_missing_folder_is_a_usage_error(capsys, tmp_path):
    code, _ = run(capsys, "validate", str(tmp_path / "nope"))
    assert code == 2


def test_status_without_daemon_says_so(capsys, tmp_path):
    code, _ = run(capsys, "--runtime-dir", str(tmp_path), "status")
    assert code == 3
    assert "not running" in run.err


def test_status_formats_the_status_file(capsys, tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({
        "phase": "serving 3 users at http://10.42.0.1:8989 on Hotspot", "active_config": "ab" * 32,
        "active_source": {"kind": "stick", "label": "CONJURING"}, "hub_urls": ["http://10.42.0.1:8989"],
        "users": 3, "admins": 1, "network": {"serve": "Hotspot", "state": "activated", "ssid": "class",
                                             "addresses": ["10.42.0.1/24"]}, "pid": 42,
        "students": {"students": 24, "students_active": 20, "students_starting": 1, "memory_used_mb": 4000,
                     "memory_headroom_mb": 11000, "more_students_fit": 55},
    }))
    code, out = run(capsys, "--runtime-dir", str(tmp_path), "status")
    assert code == 0
    assert "config:   abababababab from stick CONJURING" in out
    assert "network:  Hotspot activated class 10.42.0.1/24" in out
    assert ("students: 20 connected (server running), 1 starting; 24 known to the hub; hub memory 4000 MiB used, "
            "11000 MiB free") in out
    assert "name:     - (not published)" in out and "address:  http://10.42.0.1:8989" in out
    code, out = run(capsys, "--runtime-dir", str(tmp_path), "status", "--json")
    assert json.loads(out)["users"] == 3 and json.loads(out)["address"] == "http://10.42.0.1:8989"


def test_status_shows_the_published_name_the_address_the_wifi_and_active_students(capsys, tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({
        "phase": "serving", "hub_urls": ["http://10.42.0.1:8989"], "hub_port": 8989, "mdns_name": "conjuring.local",
        "wifi": {"ssid": "Class 5b", "own_hotspot": True},
        "students": {"students": 24, "students_active": 20, "students_starting": 1, "students_recent": 17},
    }))
    code, out = run(capsys, "--runtime-dir", str(tmp_path), "status")
    assert code == 0
    for line in ("name:     conjuring.local", "address:  http://conjuring.local:8989",
                 "wi-fi:    Class 5b (the box's own hotspot)",
                 "students: 20 connected (server running), 17 active in the last 10 minutes, 1 starting"):
        assert line in out, (line, out)
    code, out = run(capsys, "--runtime-dir", str(tmp_path), "status", "--json")
    shown = json.loads(out)
    assert shown["address"] == "http://conjuring.local:8989" and shown["mdns_name"] == "conjuring.local"
    assert shown["wifi"]["ssid"] == "Class 5b" and shown["students"]["students_recent"] == 17


def test_help_documents_exit_codes(capsys):
    code, out = run(capsys, "--help")
    assert code == 0
    assert "Exit codes:" in out and "3  the daemon is not reachable" in out


def test_sheet_is_for_root_only(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, _ = run(capsys, "--state-dir", str(tmp_path), "sheet", "-o", str(tmp_path / "CLASS.html"))
    assert code == 3 and "run as root" in run.err and not (tmp_path / "CLASS.html").exists()


def test_sheet_without_an_active_configuration_says_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    code, _ = run(capsys, "--state-dir", str(tmp_path), "--runtime-dir", str(tmp_path), "--config-dir", str(tmp_path),
                  "sheet", "-o", str(tmp_path / "CLASS.html"))
    assert code == 1 and "no configuration is active yet" in run.err and not (tmp_path / "CLASS.html").exists()
