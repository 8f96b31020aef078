"""Home backups onto a FAT stick (fusefat, tar archives) and `conjuringctl restore` from it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conjuringd.adapters.mounts import Mounter
from tests.support.udev import REPO, Harness, fat_list, fat_read, loops, make_ext4_stick, make_fat_stick, stick_tree, udevd

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]


def make_homes(home: Path) -> None:
    for user, uid in (("alice", 1101), ("bob", 1102)):
        folder = home / user
        (folder / "work").mkdir(parents=True)
        (folder / "notes.txt").write_text(f"{user}'s notes\n")
        (folder / "work" / "data.bin").write_bytes(os.urandom(200_000))
        (folder / "work" / "run.sh").write_text("#!/bin/sh\n")
        (folder / "work" / "run.sh").chmod(0o750)
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, uid, uid)
    (home / "alice" / "notes.txt").chmod(0o600)


def fingerprint(root: Path) -> dict:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        mtime = st.st_mtime_ns if path.is_file() else 0
        out[path.relative_to(root).as_posix()] = (digest, st.st_mode, st.st_uid, st.st_gid, mtime)
    return out


async def stick_pass(h: Harness, loops, image: Path) -> str:
    device = loops.attach(image)
    await h.import_and_report(device)
    loops.detach(device)
    return fat_read(image, "CONJURING/REPORT.txt").decode()


async def test_backup_to_fat_stick_incremental_and_restore(tmp_path, udevd, loops):
    tree = stick_tree(tmp_path / "tree")
    (tree / "conjuring" / "home_backup").mkdir()
    (tree / "conjuring" / "home_backup" / "README.txt").write_text("backups go here\n")
    image = make_fat_stick(tmp_path / "usb-b.img", tree, size_mb=64, upper=True)
    h = Harness(tmp_path / "h")
    make_homes(h.home)
    await h.sticks.start(h.wakes.append)
    try:
        first = await stick_pass(h, loops, image)
        assert "6 changed" in first, first
        with open(h.home / "alice" / "notes.txt", "a") as f:
            f.write("one more line\n")
        second = await stick_pass(h, loops, image)
        assert "backup written" in second and "1 changed (" in second and "5 unchanged" in second, second
    finally:
        await h.sticks.close()
    listing = fat_list(image, "CONJURING/HOME_BACKUP")
    assert "README.TXT" in listing and "MANIFEST.json" in listing  # nothing already there is deleted
    archives = [line for line in listing.splitlines() if line.endswith(".tar")]
    assert len(archives) == 2, listing
    manifest = json.loads(fat_read(image, "CONJURING/HOME_BACKUP/MANIFEST.json"))
    changed = [e for e in manifest["entries"] if e["archive"] == Path(archives[-1]).name]
    assert [e["path"] for e in changed] == ["alice/notes.txt"]
    # the imported configuration does not contain the backup
    assert not any("home_backup" in p.name.lower() for p in h.paths.configs.rglob("*"))

    # restore onto a "new box" with conjuringctl, from the stick mounted read-only
    device = loops.attach(image)
    mounter = Mounter(tmp_path / "restore-media")
    mounted = mounter.mount(device, "vfat")
    try:
        new_home, new_state = tmp_path / "new-home", tmp_path / "new-state"
        new_state.mkdir()  # the new box knows the students (their stable UIDs), the homes are not there yet
        (new_state / "uids.json").write_text(json.dumps({"users": {"alice": 1101, "bob": 1102}}))
        result = subprocess.run(
            [sys.executable, "-m", "conjuringd.ctl", "--state-dir", str(new_state), "restore",
             str(mounted.mount_point / "CONJURING" / "HOME_BACKUP"), "--home-dir", str(new_home)], capture_output=True, text=True, cwd=REPO, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr
    finally:
        mounter.unmount(mounted)
        loops.detach(device)
    assert fingerprint(new_home) == fingerprint(h.home)


async def test_backup_inside_custom_on_ext4_is_a_mirror_and_not_configuration(tmp_path, udevd, loops):
    tree = stick_tree(tmp_path / "tree")
    (tree / "conjuring" / "custom" / "home_backup").mkdir()
    image = make_ext4_stick(tmp_path / "usb-m.img", tree, size_mb=64)
    h = Harness(tmp_path / "h")
    make_homes(h.home)
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await h.import_and_report(device)
    finally:
        await h.sticks.close()
    active = h.store.state.read().active
    assert not (h.paths.configs / active / "home_backup").exists()
    mounter = Mounter(tmp_path / "check-media")
    mounted = mounter.mount(device, "ext4")
    try:
        backup = mounted.mount_point / "conjuring" / "custom" / "home_backup"
        assert fingerprint(backup / "homes") == fingerprint(h.home)  # owners, modes, mtimes kept by ext4
        manifest = json.loads((backup / "MANIFEST.json").read_text())
        assert manifest["mode"] == "mirror"
        report = (mounted.mount_point / "conjuring" / "REPORT.txt").read_text()
        assert "backup written to conjuring/custom/home_backup: 6 changed" in report, report
    finally:
        mounter.unmount(mounted)
        loops.detach(device)
