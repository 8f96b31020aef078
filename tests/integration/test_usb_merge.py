"""The real conjuringd process with --usb udev and real loop-device sticks: partial sticks are merged
onto the active configuration as the original's `cp -Ru` did; a COMPLETE stick replaces it.

One enrolled ext4 stick is rewritten between insertions (same filesystem, same stick.key), as a
teacher edits a stick: first it carries only users.csv, then only a new shared/week2 file, then a
users.csv and the COMPLETE marker. Run under `flock /tmp/conj-udev.lock`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import REPO, Daemon
from tests.support.udev import ext4_read, loop_toml, loops, make_ext4_stick, rewrite_ext4_stick, udevd

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]

# what a stick carrying only users.csv made vanish before (the issue counted six files)
BOX_FILES = ("apt.txt", "conjuring.toml", "home_default/README.md", "requirements.txt", "shared/welcome.ipynb",
             "srv/jupyterhub_config.py")


@pytest.fixture
def daemon(tmp_path, udevd):
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d", args=["--hub", "none", "--network", "none", "--usb", "udev"])
    d.config_dir.mkdir(parents=True)
    (d.config_dir / "conjuring.toml").write_text(loop_toml(tmp_path))
    yield d
    d.close()


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def active_files(daemon: Daemon) -> dict[str, bytes]:
    return files(daemon.state_dir / "configs" / daemon.state()["active"])


def stick_with(root: Path, content: dict[str, str]) -> Path:
    shutil.rmtree(root / "conjuring" / "custom", ignore_errors=True)
    custom = root / "conjuring" / "custom"
    custom.mkdir(parents=True)
    for rel, text in content.items():
        (custom / rel).parent.mkdir(parents=True, exist_ok=True)
        (custom / rel).write_text(text)
    return root


def plug(daemon: Daemon, loops, image: Path, reports: int) -> str:
    device = loops.attach(image)
    daemon.wait_event("report_written", count=reports, timeout=60)
    loops.detach(device)
    return ext4_read(image, "/conjuring/REPORT.txt").decode()


def test_partial_sticks_keep_the_box_configuration_and_a_complete_stick_replaces_it(daemon, tmp_path, loops):
    daemon.start()
    daemon.wait_event("converged")
    box = active_files(daemon)
    assert set(BOX_FILES) <= set(box), sorted(box)  # the test would prove nothing otherwise

    # 1. only users.csv (the first stick on a new box: enrolled on first use)
    users = (REPO / "custom" / "users.csv").read_text() + "partial,pw-123456,\n"
    tree = stick_with(tmp_path / "t", {"users.csv": users})
    image = make_ext4_stick(tmp_path / "usb.img", tree)
    report = plug(daemon, loops, image, reports=1)
    assert "APPLIED" in report, report
    after_users = active_files(daemon)
    assert after_users["users.csv"] == users.encode()
    assert {rel: after_users.get(rel) for rel in box if rel != "users.csv"} == \
        {rel: data for rel, data in box.items() if rel != "users.csv"}, "a file of the box vanished or changed"
    assert "users.csv   (replaced)" in report and "Kept from the box's configuration" in report, report
    for rel in BOX_FILES:
        assert f"  {rel}\r\n" in report, (rel, report)

    # 2. only a new file in shared/week2; it also asks for a backup of every home, which a stick that
    #    does not say who the users are (no users.csv, not COMPLETE) does not get
    (daemon.state_dir / "home" / "student2").mkdir(parents=True)
    (daemon.state_dir / "home" / "student2" / "private.txt").write_text("student2's notes\n")
    tree = stick_with(tmp_path / "t", {"shared/week2/loops.md": "# Week 2: loops\n"})
    (tree / "conjuring" / "home_backup").mkdir(exist_ok=True)
    rewrite_ext4_stick(image, tree)
    report = plug(daemon, loops, image, reports=2)
    assert "APPLIED" in report, report
    assert "backup NOT written: a backup is written only for a stick that carries users.csv" in report, report
    listing = subprocess.run(["debugfs", "-R", "ls -p /conjuring/home_backup", str(image)], capture_output=True, text=True)
    assert listing.returncode == 0 and "private" not in listing.stdout and ".tar" not in listing.stdout, listing.stdout
    assert active_files(daemon) == {**after_users, "shared/week2/loops.md": b"# Week 2: loops\n"}
    assert "shared/week2/loops.md   (new)" in report, report
    assert daemon.status().get("users") == users.count("\n") - 1  # the users of step 1 are still served

    shutil.rmtree(tree / "conjuring" / "home_backup")
    # 3. COMPLETE: the stick is the whole configuration. It drops student1 and carries an original-style
    #    custom/home/ with a replacement for student1's file: homes are not the stick's to change
    home = daemon.state_dir / "home" / "student1"
    home.mkdir(parents=True, exist_ok=True)
    (home / "homework.py").write_text("print('mine')\n")
    only = "name,password,admin\nsolo,pw-123456,yes\n"
    tree = stick_with(tmp_path / "t", {"users.csv": only, "COMPLETE": "", "home/student1/homework.py": "stolen\n"})
    rewrite_ext4_stick(image, tree)
    report = plug(daemon, loops, image, reports=3)
    assert "APPLIED" in report and "declares itself complete (COMPLETE)" in report, report
    assert active_files(daemon) == {"users.csv": only.encode()}
    assert "shared/week2/loops.md" in report.split("Removed from the box's configuration")[1]
    assert "home: student homes are never taken from a stick" in report, report
    assert (home / "homework.py").read_text() == "print('mine')\n"
    assert daemon.proc.poll() is None
