"""The real conjuringd process with --usb udev: sticks on loop devices change the active configuration."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conjuringd.store import config_digest
from tests.support.daemon import REPO, Daemon
from tests.support.udev import (
    ext4_read, fat_read, kill_fuse_for, loop_toml, loops, make_ext4_stick, make_fat_stick, rewrite_ext4_stick, settle, udevd,
)

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]


def stick_tree(root: Path, users_extra: str = "") -> Path:
    custom = root / "conjuring" / "custom"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "custom", custom)
    if users_extra:
        with open(custom / "users.csv", "a") as f:
            f.write(users_extra)
    return root


def merged_digest(snapshot: Path, custom: Path, scratch: Path) -> str:
    """What a partial stick makes active: the active snapshot with the stick's files laid over it."""
    shutil.copytree(snapshot, scratch)
    shutil.copytree(custom, scratch, dirs_exist_ok=True)
    return config_digest(scratch)


@pytest.fixture
def daemon(tmp_path, udevd):
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d", args=["--hub", "none", "--network", "none", "--usb", "udev"])
    d.config_dir.mkdir(parents=True)
    (d.config_dir / "conjuring.toml").write_text(loop_toml(tmp_path))
    yield d
    d.close()


def wait_active(daemon: Daemon, config_hash: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if daemon.state().get("active") == config_hash and daemon.status().get("active_config") == config_hash:
                return
        except (OSError, ValueError):
            pass
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon died:\n{daemon.log_path.read_text()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{config_hash[:12]} never active:\n{daemon.log_path.read_text()[-4000:]}")


def enrol_when_refused(daemon: Daemon, device: str) -> None:
    """A stick the box does not know yet was inserted: wait for its refusal, then `conjuringctl enroll` it."""
    refused = len(daemon.events("stick_not_enrolled"))
    daemon.wait_event("stick_not_enrolled", count=refused + 1, timeout=30)
    assert daemon.events("stick_not_enrolled")[-1]["device"] == device
    result = daemon.ctl("enroll", device)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"enrolled {device}" in result.stdout


def test_ext4_stick_attach_edit_reattach_unchanged(daemon, tmp_path, loops):
    daemon.start()
    daemon.wait_event("ready")
    daemon.wait_event("converged")
    local = daemon.state()["active"]

    tree = stick_tree(tmp_path / "t", "stickuser,pw-123456,\n")
    image = make_ext4_stick(tmp_path / "usb-a.img", tree)
    device = loops.attach(image)
    first = config_digest(tree / "conjuring" / "custom")
    assert first != local
    wait_active(daemon, first)
    assert "stick" in str(daemon.status().get("active_source")).lower()
    daemon.wait_event("report_written", count=1)
    loops.detach(device)
    first_report = ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert "APPLIED" in first_report and "the box ENROLLED it" in first_report

    tree = stick_tree(tmp_path / "t", "stickuser,pw-123456,\nsecond,pw-654321,yes\n")
    rewrite_ext4_stick(image, tree)  # the teacher edits the stick: same filesystem, same stick.key
    device = loops.attach(image)
    second = config_digest(tree / "conjuring" / "custom")
    wait_active(daemon, second)
    daemon.wait_event("report_written", count=2)
    loops.detach(device)

    passes = len(daemon.events("converged"))
    device = loops.attach(image)
    daemon.wait_event("import", count=1, result="unchanged")
    daemon.wait_event("report_written", count=3)
    loops.detach(device)
    assert daemon.state()["active"] == second
    assert len(daemon.events("converged")) <= passes + 1  # at most the pass that imported "unchanged"
    assert [e for e in daemon.events("config_activated")][-1]["config"] == second[:12]
    assert "UNCHANGED" in ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert daemon.proc.poll() is None


def test_fat_stick_with_upper_case_names(daemon, tmp_path, loops):
    daemon.start()
    daemon.wait_event("converged")
    tree = stick_tree(tmp_path / "t", "fatuser,pw-123456,\n")
    image = make_fat_stick(tmp_path / "usb-f.img", tree, upper=True)
    device = loops.attach(image)
    daemon.wait_event("report_written", timeout=30)
    loops.detach(device)
    active = daemon.state()["active"]
    snapshot = daemon.state_dir / "configs" / active
    assert "fatuser" in (snapshot / "users.csv").read_text()
    assert (snapshot / "shared" / "WELCOME.IPYNB").exists()
    report = fat_read(image, "CONJURING/REPORT.txt").decode()
    assert "APPLIED" in report


def start_with_stick_in(daemon: Daemon, tmp_path: Path, loops, user: str) -> None:
    """An ext4 stick adding `user` is attached and settled, then the daemon starts and imports it."""
    tree = stick_tree(tmp_path / "t", f"{user},pw-123456,\n")
    loops.attach(make_ext4_stick(tmp_path / f"usb-{user}.img", tree))
    settle()
    daemon.start()
    wait_active(daemon, config_digest(tree / "conjuring" / "custom"))


def test_stick_attached_before_start_is_imported(daemon, tmp_path, loops):
    start_with_stick_in(daemon, tmp_path, loops, "early")


def test_broken_users_csv_report_has_every_problem(daemon, tmp_path, loops):
    daemon.start()
    daemon.wait_event("converged")
    local = daemon.state()["active"]
    tree = stick_tree(tmp_path / "t")
    (tree / "conjuring/custom/users.csv").write_text("name,password,admin\nana,pw-111111,yes\nana,pw-222222,no\n,pw-333333,\n")
    image = make_ext4_stick(tmp_path / "usb-x.img", tree)
    device = loops.attach(image)
    daemon.wait_event("report_written", timeout=30)
    loops.detach(device)
    assert daemon.state()["active"] == local
    report = ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert "INVALID" in report
    assert "users.csv:3" in report and "users.csv:4" in report, report


def test_two_sticks_at_once_the_later_wins_and_both_reports_say_so(daemon, tmp_path, loops):
    daemon.start()
    daemon.wait_event("converged")
    tree_a = stick_tree(tmp_path / "a", "from_a,pw-123456,\n")
    tree_b = stick_tree(tmp_path / "b", "from_b,pw-123456,\n")
    image_a = make_ext4_stick(tmp_path / "usb-a.img", tree_a, label="STICK_A")
    image_b = make_ext4_stick(tmp_path / "usb-b.img", tree_b, label="STICK_B")
    dev_a = loops.attach(image_a)  # the first stick on this box: enrolled on first use
    daemon.wait_event("report_written", count=1, timeout=30)
    loops.detach(dev_a)
    dev_b = loops.attach(image_b)  # the second: refused, then enrolled with conjuringctl
    enrol_when_refused(daemon, dev_b)
    daemon.wait_event("report_written", count=3, timeout=30)
    loops.detach(dev_b)
    assert daemon.state()["active"] == config_digest(tree_b / "conjuring" / "custom")
    dev_a = loops.attach(image_a)
    dev_b = loops.attach(image_b)
    daemon.wait_event("report_written", count=5, timeout=30)
    loops.detach(dev_a)
    loops.detach(dev_b)
    later = config_digest(tree_b / "conjuring" / "custom")
    assert daemon.state()["active"] == later
    report_a = ext4_read(image_a, "/conjuring/REPORT.txt").decode()
    report_b = ext4_read(image_b, "/conjuring/REPORT.txt").decode()
    assert "NOT the active" in report_a and "STICK_B" in report_a, report_a
    assert "NOT the active" not in report_b and f"Active configuration: {later[:12]}" in report_b, report_b


def test_stick_pulled_mid_copy_keeps_config_and_daemon(tmp_path, udevd, loops):
    (tmp_path / "d").mkdir()
    daemon = Daemon(tmp_path / "d", args=["--hub", "none", "--network", "none", "--usb", "udev"],
                    env={"CONJURINGD_DEBUG": "1", "CONJURINGD_DEBUG_COPY_PAUSE": "5:3"})
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text(loop_toml(tmp_path))
    try:
        daemon.start()
        daemon.wait_event("converged")
        before_hash = daemon.state()["active"]
        snapshot = daemon.state_dir / "configs" / before_hash
        before = {p: p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
        tree = stick_tree(tmp_path / "t", "pulled,pw-123456,\n")
        for i in range(20):
            (tree / "conjuring/custom/shared" / f"lesson{i:02d}.txt").write_text(f"lesson {i}\n")
        image = make_fat_stick(tmp_path / "usb-p.img", tree, upper=False)
        device = loops.attach(image)
        daemon.wait_event("debug_copy_pause")
        kill_fuse_for(daemon.runtime_dir / "media" / Path(device).name)
        loops.detach(device)
        aborted = daemon.wait_event("stick_import_aborted")
        assert aborted[0]["present"] is False
        time.sleep(0.5)
        assert daemon.proc.poll() is None
        assert daemon.state()["active"] == before_hash
        assert {p: p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == before
        assert not [line for line in open("/proc/self/mountinfo") if str(daemon.runtime_dir) in line]
        assert list((daemon.state_dir / "staging").iterdir()) == []
        # and it still takes the next stick
        tree = stick_tree(tmp_path / "t2", "after,pw-123456,\n")
        device = loops.attach(make_ext4_stick(tmp_path / "usb-n.img", tree))
        enrol_when_refused(daemon, device)  # the pulled stick was the first, and was enrolled
        wait_active(daemon, config_digest(tree / "conjuring" / "custom"))
    finally:
        daemon.close()


def test_restart_does_not_reapply_a_stick_over_a_newer_local_edit(daemon, tmp_path, loops):
    start_with_stick_in(daemon, tmp_path, loops, "sticky")
    daemon.wait_event("report_written")
    daemon.stop()
    with open(daemon.custom / "users.csv", "a") as f:  # edited while the daemon was down: the newest change
        f.write("localedit,pw-123456,\n")
    local = config_digest(daemon.custom)
    daemon.start()
    wait_active(daemon, local)
    daemon.wait_event("converged", count=2)  # one before the restart, one after
    time.sleep(1.0)
    assert daemon.state()["active"] == local
    assert len(daemon.events("stick_seen")) == 1  # the same insertion is not seen as new after a restart


def test_stuck_stick_is_abandoned_the_next_is_applied_and_stop_does_not_hang(tmp_path, udevd, loops):
    """The real daemon with a stick step that never returns (the debug pause sleeps 10 minutes in the
    stick thread, as a read blocked in the kernel would): the stick is abandoned at the deadline and
    told so, the next stick is applied, and SIGTERM still stops the daemon at once."""
    (tmp_path / "d").mkdir()
    daemon = Daemon(tmp_path / "d", args=["--hub", "none", "--network", "none", "--usb", "udev"],
                    env={"CONJURINGD_DEBUG": "1", "CONJURINGD_DEBUG_COPY_PAUSE": "3:600",
                         "CONJURINGD_DEBUG_STICK_DEADLINE": "3"})
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text(loop_toml(tmp_path))
    try:
        daemon.start()
        daemon.wait_event("converged")
        before = daemon.state()["active"]
        image = make_ext4_stick(tmp_path / "usb-stuck.img", stick_tree(tmp_path / "t", "stuck,pw-123456,\n"))
        device = loops.attach(image)
        daemon.wait_event("stick_operation_stuck", timeout=30)
        daemon.wait_event("report_written", timeout=30, result="failed")
        loops.detach(device)
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert "FAILED" in report and "the stick stopped answering: copying the configuration did not finish within 3 s" in report
        assert daemon.state()["active"] == before and daemon.proc.poll() is None
        nxt = tmp_path / "t2" / "conjuring" / "custom"
        nxt.mkdir(parents=True)
        (nxt / "users.csv").write_text("name,password,admin\nnext,pw-123456,\n")  # 1 file: the debug pause is at the 3rd
        device = loops.attach(make_ext4_stick(tmp_path / "usb-next.img", tmp_path / "t2"))
        enrol_when_refused(daemon, device)  # the stuck stick was the first, enrolled on first use
        wait_active(daemon, merged_digest(daemon.state_dir / "configs" / before, nxt, tmp_path / "expected"))
        loops.detach(device)
        started = time.monotonic()
        assert daemon.stop(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        daemon.close()
