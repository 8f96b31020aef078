"""The real conjuringd process: temp folders, a real notify socket, real inotify edits."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon

BROKEN_USERS = "name,password,admin\nana,secret1,yes\nana,secret2,no\n"


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, env={"WATCHDOG_USEC": "1000000", "CONJURINGD_DEBUG": "1"})
    yield d
    d.close()


def save_like_an_editor(path: Path, text: str) -> None:
    """Write a temp file beside the target, then rename it over (what editors do)."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_ready_status_passes_and_invalid_edit(daemon):
    started = daemon.start()
    ready = daemon.notify.wait_for(lambda m: m == "READY=1", timeout=10)
    assert ready is not None, daemon.log_path.read_text()
    assert ready[0] - started < 2.0, f"READY=1 after {ready[0] - started:.2f}s"
    daemon.wait_event("converged", count=1)
    first = daemon.state()["active"]
    assert first and (daemon.state_dir / "configs" / first).is_dir()
    assert daemon.status()["active_config"] == first
    assert daemon.notify.wait_for(lambda m: m.startswith("STATUS=configuration"), timeout=5)

    # a valid edit: one save burst (several files, editor-style) -> exactly one new pass
    passes_before = len(daemon.events("pass_start"))
    users = daemon.custom / "users.csv"
    save_like_an_editor(users, users.read_text() + "newstudent,pass1234,\n")
    save_like_an_editor(daemon.custom / "apt.txt", "# nothing\n")
    daemon.wait_event("converged", count=2)
    time.sleep(1.0)  # anything still coming from that burst would show up now
    assert len(daemon.events("pass_start")) == passes_before + 1
    second = daemon.state()["active"]
    assert second != first

    # an invalid edit: reported, and the previous configuration stays active byte for byte
    snapshot = daemon.state_dir / "configs" / second
    before = {p.relative_to(snapshot): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    save_like_an_editor(users, BROKEN_USERS)
    daemon.wait_event("import", result="invalid")
    problems = [e["problem"] for e in daemon.events("config_problem")]
    assert any("users.csv:3" in p and "duplicate" in p for p in problems), problems
    assert daemon.state()["active"] == second
    assert {p.relative_to(snapshot): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == before
    status = daemon.wait_status(lambda s: s.get("last_error"))
    assert "invalid" in status["last_error"]
    assert any("users.csv:3" in p for p in status["problems"])
    assert daemon.proc.poll() is None

    # valid again
    save_like_an_editor(users, "name,password,admin\nana,secret1,yes\nbob,secret2,\n")
    daemon.wait_event("import", result="applied", count=3)
    third = daemon.state()["active"]
    assert third not in (first, second)
    daemon.wait_status(lambda s: s.get("active_config") == third and s.get("last_error") is None)
    assert "secret1" not in daemon.log_path.read_text(), "a password leaked into the log"

    assert daemon.stop() == 0
    assert daemon.notify.wait_for(lambda m: m == "STOPPING=1", timeout=2)


def test_watchdog_pings_stop_when_the_loop_hangs(daemon):
    daemon.start()
    assert daemon.notify.wait_for(lambda m: m == "READY=1", timeout=10)
    daemon.wait_event("converged")
    pings = [m for m in daemon.notify.collect(2.0) if m[1] == "WATCHDOG=1"]
    assert len(pings) >= 3, "the pinger should ping every 0.5 s while the loop is alive"
    result = daemon.ctl("wake")
    assert result.returncode == 0, result.stderr
    # make the reconciler hang in its next pass: the event loop lives on, the heartbeat does not
    import socket as _socket

    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.runtime_dir / "ctl.sock"))
        sock.sendall(json.dumps({"command": "debug-hang"}).encode() + b"\n")
        assert json.loads(sock.recv(4096))["ok"]
    daemon.wait_event("watchdog_withheld", timeout=5)
    daemon.notify.collect(0.05)  # drop the pings sent before the pinger noticed
    late = [m for m in daemon.notify.collect(2.0) if m[1] == "WATCHDOG=1"]
    assert late == [], "pings must stop once the reconciler hangs"
    assert daemon.proc.poll() is None


def test_restart_keeps_active_config_and_imports_edits_made_while_down(daemon):
    daemon.start()
    daemon.wait_event("converged")
    first = daemon.state()["active"]
    daemon.stop()
    # restart with nothing changed: no import
    daemon.start()
    daemon.wait_event("converged", count=2)
    assert daemon.state()["active"] == first
    assert len(daemon.events("config_activated")) == 1
    daemon.stop()
    # edit while down: imported at start-up
    (daemon.custom / "shared" / "notes.txt").write_text("read me\n")
    daemon.start()
    daemon.wait_event("converged", count=3)
    assert daemon.state()["active"] != first
    assert (daemon.state_dir / "configs" / daemon.state()["active"] / "shared" / "notes.txt").read_text() == "read me\n"


def test_ctl_apply_validate_status_and_plan(daemon, tmp_path):
    daemon.start()
    daemon.wait_event("converged")
    other = tmp_path / "other"
    shutil.copytree(daemon.default_custom, other)
    (other / "apt.txt").write_text("curl\n")
    plan = daemon.ctl("plan", str(other))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "layers to rebuild: apt" in plan.stdout
    assert "users    unchanged" in plan.stdout
    applied = daemon.ctl("apply", str(other))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert applied.stdout.strip().splitlines()[-1].startswith("applied")
    assert daemon.ctl("apply", str(other)).stdout.strip().startswith("unchanged")
    (other / "users.csv").write_text(BROKEN_USERS)
    refused = daemon.ctl("apply", str(other))
    assert refused.returncode == 1
    assert "users.csv:3" in refused.stdout
    status = daemon.ctl("status")
    assert status.returncode == 0 and "config:" in status.stdout and "conjuringctl" in status.stdout
    as_json = json.loads(daemon.ctl("status", "--json").stdout)
    assert as_json["active_source"]["kind"] == "conjuringctl"
