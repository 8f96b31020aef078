"""Stick enrolment with the real conjuringd process, a real systemd-udevd and loop-device sticks (ext4 and FAT).

Only an enrolled stick changes the box or receives anything from it; the first stick on a new box is enrolled
on first use; a revoked stick is a stranger again; `[usb] trust = "any"` is the original Conjuring's behaviour.
The hostile cases are built as a student would: a stick of their own, with the teacher's stick.key copied on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import REPO, Daemon
from tests.support.udev import MTOOLS_ENV, ext4_read, fat_read, loop_toml, loops, make_ext4_stick, make_fat_stick, udevd

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]

FS = ("ext4", "vfat")
STUDENT_HOME_TEXT = "ana's homework, nobody else's\n"


def stick_tree(root: Path, user: str, *, backup: bool = False) -> Path:
    custom = root / "conjuring" / "custom"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "custom", custom)
    with open(custom / "users.csv", "a") as f:
        f.write(f"{user},pw-{user}-123456,\n")
    if backup:
        (root / "conjuring" / "home_backup").mkdir()
    return root


def make_stick(fs: str, image: Path, tree: Path, label: str) -> Path:
    if fs == "ext4":
        return make_ext4_stick(image, tree, label=label)
    return make_fat_stick(image, tree, label=label[:11], upper=True)


def read(fs: str, image: Path, path: str) -> bytes:
    return ext4_read(image, "/" + path) if fs == "ext4" else fat_read(image, path)


def exists(fs: str, image: Path, path: str) -> bool:
    if fs == "ext4":
        out = subprocess.run(["debugfs", "-R", f"stat /{path}", str(image)], capture_output=True, text=True)
        return "Inode:" in out.stdout
    return subprocess.run(["mdir", "-b", "-i", str(image), "::" + path], capture_output=True, env=MTOOLS_ENV).returncode == 0


def listing(fs: str, image: Path, path: str) -> list[str]:
    if fs == "ext4":
        out = subprocess.run(["debugfs", "-R", f"ls -p /{path}", str(image)], capture_output=True, text=True).stdout
        names = [line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6]  # /ino/mode/uid/gid/name/size/
        return sorted(n for n in names if n not in (".", ".."))
    out = subprocess.run(["mdir", "-b", "-i", str(image), "::" + path], capture_output=True, text=True,
                         env=MTOOLS_ENV).stdout
    return sorted(Path(line.rstrip("/")).name for line in out.splitlines() if line.strip())


def active_users(daemon: Daemon) -> str:
    """users.csv of the active configuration (FAT's upper-case names make digests differ from the tree's)."""
    return (daemon.state_dir / "configs" / daemon.state()["active"] / "users.csv").read_text()


def users_of(tree: Path) -> str:
    return (tree / "conjuring" / "custom" / "users.csv").read_text()


def new_box(root: Path, trust: str = "") -> Daemon:
    root.mkdir()
    d = Daemon(root, args=["--hub", "none", "--network", "none", "--usb", "udev"])
    d.config_dir.mkdir(parents=True)
    (d.config_dir / "conjuring.toml").write_text(loop_toml(root, f'trust = "{trust}"\n' if trust else ""))
    home = d.state_dir / "home" / "ana"
    home.mkdir(parents=True)
    (home / "homework.txt").write_text(STUDENT_HOME_TEXT)
    return d


@pytest.fixture
def box(tmp_path, udevd):
    d = new_box(tmp_path / "box")
    yield d
    d.close()


def insert(daemon: Daemon, loops, image: Path, reports: int) -> str:
    """Attach the stick, wait until its report is written (the `reports`-th of the run), pull it."""
    device = loops.attach(image)
    daemon.wait_event("report_written", count=reports, timeout=60)
    loops.detach(device)
    return device


def enrolled_sticks(daemon: Daemon) -> list[dict]:
    result = daemon.ctl("sticks", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def teacher_enrolled(daemon: Daemon, loops, tmp_path: Path, fs: str) -> tuple[Path, str]:
    """A teacher's stick, enrolled on first use on this new box and applied."""
    tree = stick_tree(tmp_path / "teacher", "teach1")
    image = make_stick(fs, tmp_path / f"usb-teacher-{fs}.img", tree, "TEACHER")
    daemon.start()
    daemon.wait_event("converged")
    insert(daemon, loops, image, reports=1)
    assert active_users(daemon) == users_of(tree)
    return image, daemon.state()["active"]


def assert_refused(daemon: Daemon, fs: str, image: Path, device: str, active: str) -> str:
    """The stick changed nothing, got nothing but a 'not enrolled' report; returns the report."""
    assert daemon.state()["active"] == active
    report = read(fs, image, "conjuring/REPORT.txt").decode()
    assert "this stick is not enrolled on this box" in report and "conjuringctl enroll" in report, report
    for detail in ("http://", "Users:", "Active configuration", active[:12], "teach1", "Hub:"):
        assert detail not in report, (detail, report)
    journal = [e for e in daemon.events("stick_not_enrolled") if e["device"] == device]
    assert journal and "not enrolled" in journal[-1]["message"] and device in journal[-1]["message"]
    assert not [e for e in daemon.events("stick_copied") if e["device"] == device and e["timestamp"] >= journal[-1]["timestamp"]]
    return report


@pytest.mark.parametrize("fs", FS)
def test_first_stick_on_a_new_box_is_enrolled_applied_and_listed(box, tmp_path, loops, fs):
    tree = stick_tree(tmp_path / "t", "first1", backup=True)
    image = make_stick(fs, tmp_path / f"usb-first-{fs}.img", tree, "FIRST")
    box.start()
    box.wait_event("converged")
    assert enrolled_sticks(box) == []
    insert(box, loops, image, reports=1)
    assert active_users(box) == users_of(tree)
    report = read(fs, image, "conjuring/REPORT.txt").decode()
    assert "APPLIED" in report and "This is the first stick on this box, so the box ENROLLED it" in report, report
    assert "backup written" in report, report
    assert "MANIFEST.json" in listing(fs, image, "conjuring/home_backup")  # (the listing sees a backup)
    assert b"id=" in read(fs, image, "conjuring/stick.key")
    [stick] = enrolled_sticks(box)
    assert stick["label"] == "FIRST" and stick["enrolled_at"] and stick["last_used"] and not stick["revoked_at"]
    out = box.ctl("sticks").stdout
    assert stick["id"] in out and "FIRST" in out and "LAST USED" in out
    secrets = box.state_dir / "secrets"
    assert oct(os.stat(secrets / "stick-secret").st_mode & 0o777) == "0o600"
    token = read(fs, image, "conjuring/stick.key").split(b"token=")[1][:64]
    assert token not in (secrets / "sticks.json").read_bytes()  # the box keeps no credential, only its id


@pytest.mark.parametrize("fs", FS)
def test_unenrolled_stick_changes_nothing_and_receives_nothing(box, tmp_path, loops, fs):
    _, active = teacher_enrolled(box, loops, tmp_path, fs)
    tree = stick_tree(tmp_path / "student", "intruder", backup=True)
    image = make_stick(fs, tmp_path / f"usb-student-{fs}.img", tree, "STUDENT")
    device = insert(box, loops, image, reports=2)
    assert_refused(box, fs, image, device, active)
    assert listing(fs, image, "conjuring/home_backup") == []  # no student's home left the box
    assert not exists(fs, image, "conjuring/stick.key")
    assert [e["id"] for e in enrolled_sticks(box)] and len(enrolled_sticks(box)) == 1
    assert len(box.events("stick_not_enrolled")) == 1  # handled once, no retries
    assert box.proc.poll() is None


@pytest.mark.parametrize("fs", FS)
def test_the_teachers_key_copied_onto_another_stick_is_refused(box, tmp_path, loops, fs):
    teacher, active = teacher_enrolled(box, loops, tmp_path, fs)
    tree = stick_tree(tmp_path / "copy", "copycat", backup=True)
    (tree / "conjuring" / "stick.key").write_bytes(read(fs, teacher, "conjuring/stick.key"))
    image = make_stick(fs, tmp_path / f"usb-copy-{fs}.img", tree, "TEACHER")  # same label, other filesystem
    device = insert(box, loops, image, reports=2)
    assert_refused(box, fs, image, device, active)
    assert listing(fs, image, "conjuring/home_backup") == []
    assert "belongs to filesystem" in box.events("stick_not_enrolled")[-1]["reason"]


@pytest.mark.parametrize("fs", FS)
def test_revoked_stick_is_treated_as_unenrolled(box, tmp_path, loops, fs):
    teacher, _ = teacher_enrolled(box, loops, tmp_path, fs)
    [stick] = enrolled_sticks(box)
    other = stick_tree(tmp_path / "local", "localedit")  # the box moves on to another configuration
    applied = box.ctl("apply", str(other / "conjuring" / "custom"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    active = box.state()["active"]
    result = box.ctl("revoke", stick["id"])
    assert result.returncode == 0 and f"revoked {stick['id']}" in result.stdout, result.stderr
    assert box.ctl("revoke", stick["id"]).returncode == 1  # once is enough
    [revoked] = enrolled_sticks(box)
    assert revoked["revoked_at"]
    device = insert(box, loops, teacher, reports=2)
    assert_refused(box, fs, teacher, device, active)
    assert "revoked" in box.events("stick_not_enrolled")[-1]["reason"]


@pytest.mark.parametrize("fs", FS)
def test_conjuringctl_enroll_enrols_a_stick_that_is_then_applied(box, tmp_path, loops, fs):
    _, active = teacher_enrolled(box, loops, tmp_path, fs)
    tree = stick_tree(tmp_path / "spare", "spare1", backup=True)
    image = make_stick(fs, tmp_path / f"usb-spare-{fs}.img", tree, "SPARE")
    device = loops.attach(image)
    box.wait_event("stick_not_enrolled", timeout=30)
    result = box.ctl("enroll")  # the only stick inserted: no device needed
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"enrolled {device}" in result.stdout
    box.wait_event("report_written", count=3, timeout=60)
    loops.detach(device)
    assert active_users(box) == users_of(tree) and box.state()["active"] != active
    report = read(fs, image, "conjuring/REPORT.txt").decode()
    assert "APPLIED" in report and "This stick is enrolled on this box" in report, report
    assert "backup written" in report, report
    assert {s["label"] for s in enrolled_sticks(box)} == {"TEACHER", "SPARE"}
    device = insert(box, loops, image, reports=4)  # next time it is simply known
    assert "UNCHANGED" in read(fs, image, "conjuring/REPORT.txt").decode()
    assert len(box.events("stick_not_enrolled")) == 1


def test_enroll_without_a_stick_or_with_a_wrong_device_says_why(box, tmp_path, loops):
    box.start()
    box.wait_event("converged")
    result = box.ctl("enroll")
    assert result.returncode == 1 and "no stick is inserted" in result.stderr
    result = box.ctl("enroll", "/dev/null")
    assert result.returncode == 1 and "not a stick this box accepts" in result.stderr
    assert enrolled_sticks(box) == []


def test_refused_configuration_of_an_enrolled_stick_gets_no_backup(box, tmp_path, loops):
    tree = stick_tree(tmp_path / "t", "broken1", backup=True)
    (tree / "conjuring" / "custom" / "users.csv").write_text("name,password,admin\nana,pw-1111111,\nana,pw-2222222,\n")
    image = make_stick("ext4", tmp_path / "usb-broken.img", tree, "BROKEN")
    box.start()
    box.wait_event("converged")
    local = box.state()["active"]
    insert(box, loops, image, reports=1)
    assert box.state()["active"] == local
    report = read("ext4", image, "conjuring/REPORT.txt").decode()
    assert "INVALID" in report and "backup NOT written: this stick's configuration was refused (INVALID)" in report
    assert listing("ext4", image, "conjuring/home_backup") == []


@pytest.mark.parametrize("fs", FS)
def test_trust_any_is_the_original_behaviour(tmp_path, udevd, loops, fs):
    daemon = new_box(tmp_path / "box", trust="any")
    try:
        daemon.start()
        daemon.wait_event("converged")
        for n, name in enumerate(("one", "two"), start=1):
            tree = stick_tree(tmp_path / name, f"user{name}", backup=True)
            image = make_stick(fs, tmp_path / f"usb-{name}-{fs}.img", tree, name.upper())
            insert(daemon, loops, image, reports=n)
            assert active_users(daemon) == users_of(tree)
            report = read(fs, image, "conjuring/REPORT.txt").decode()
            assert "APPLIED" in report and "backup written" in report, report
            assert "trust = \"any\"" in report
            assert not exists(fs, image, "conjuring/stick.key")  # nothing to enrol
        assert daemon.events("stick_not_enrolled") == [] and enrolled_sticks(daemon) == []
    finally:
        daemon.close()
