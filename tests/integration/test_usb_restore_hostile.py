"""A crafted backup on a stick, restored with the real `conjuringctl restore`: the attacker's stick
(built at run time, a real ext4 filesystem on a loop device, mounted read-only) carries a manifest
asking for a setuid-root shell in a student's home, with the file itself setuid root on the stick."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.legacy_backup import hostile_tar
from tests.support.udev import REPO, make_ext4_stick, unavailable

pytestmark = pytest.mark.udev

SHELL = b"#!/bin/sh\nexec /bin/sh -p\n"
ANA = 2001


def hostile_backup_tree(root: Path) -> Path:
    backup = root / "conjuring" / "home_backup"
    (backup / "homes" / "ana").mkdir(parents=True)
    for name in ("rootshell", "nosum"):
        path = backup / "homes" / "ana" / name
        path.write_bytes(SHELL)
        os.chmod(path, 0o6755)  # setuid/setgid root on the stick itself (the tree is root's here)
    (backup / "homes" / "ana" / "short").write_bytes(b"abcdef")
    sha = hashlib.sha256(SHELL).hexdigest()
    entries = [
        {"path": "ana", "kind": "dir", "mode": 0o7777, "uid": 0, "gid": 0, "mtime_ns": 0},
        {"path": "ana/rootshell", "kind": "file", "mode": 0o4755, "uid": 0, "gid": 0, "mtime_ns": 0,
         "size": len(SHELL), "sha256": sha},
        {"path": "ana/nosum", "kind": "file", "mode": 0o6755, "uid": 0, "gid": 0, "mtime_ns": 0,
         "size": len(SHELL), "sha256": ""},
        {"path": "ana/short", "kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0,
         "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
    ]
    (backup / "MANIFEST.json").write_text(json.dumps({"version": 1, "mode": "mirror", "entries": entries}))
    return root


def test_restore_of_a_crafted_backup_on_a_stick_makes_no_setuid_file(tmp_path):
    if os.geteuid() != 0:
        unavailable("mounting a stick image needs root")
    image = make_ext4_stick(tmp_path / "usb-restore.img", hostile_backup_tree(tmp_path / "tree"))
    mount_point = tmp_path / "stick"
    mount_point.mkdir()
    subprocess.run(["mount", "-o", "loop,ro,nosuid,nodev", str(image), str(mount_point)], check=True)
    homes, state = Path(tempfile.mkdtemp(prefix="conj-restore-")) / "homes", tmp_path / "state"
    os.chmod(homes.parent, 0o755)  # the student must be able to reach their home (tmp_path is root's 0700)
    (homes / "ana").mkdir(parents=True)
    os.chown(homes / "ana", ANA, ANA)
    try:
        source = mount_point / "conjuring" / "home_backup"
        assert os.stat(source / "homes/ana/rootshell").st_mode & stat.S_ISUID, "the stick really carries a setuid file"
        result = subprocess.run(
            [sys.executable, "-m", "conjuringd.ctl", "--state-dir", str(state), "restore", str(source),
             "--home-dir", str(homes)], capture_output=True, text=True, cwd=REPO, timeout=60)
    finally:
        subprocess.run(["umount", "-d", str(mount_point)], check=False)
    try:
        check_restored(result, homes)
    finally:
        shutil.rmtree(homes.parent)


def check_restored(result: subprocess.CompletedProcess, homes: Path) -> None:
    assert result.returncode == 1, result  # something was skipped, and the exit code says so
    assert "ana/nosum: the backup records no checksum for it: skipped" in result.stderr
    assert "ana/short: the backup copy has more than the 3 bytes recorded" in result.stderr
    assert "restored 1," in result.stdout
    assert sorted(os.listdir(homes / "ana")) == ["rootshell"]
    for path in (homes / "ana", homes / "ana" / "rootshell"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (ANA, ANA), path
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), oct(st.st_mode)
    # run as the student, the restored shell is the student, not root
    who = subprocess.run(["setpriv", f"--reuid={ANA}", f"--regid={ANA}", "--clear-groups",
                          str(homes / "ana" / "rootshell")], input="id -u\n", capture_output=True, text=True, timeout=30)
    assert who.stdout.strip() == str(ANA), who


def original_format_stick(root: Path, outside: Path) -> Path:
    """An attacker's stick in the original Conjuring's layout: conjuring/custom/home_backup/ holding
    home.tar with every hostile kind of member (tests/support/legacy_backup.py)."""
    backup = root / "conjuring" / "custom" / "home_backup"
    backup.mkdir(parents=True)
    hostile_tar(backup / "home.tar", outside)
    return root


def test_restore_of_a_crafted_home_tar_in_the_originals_layout_refuses_each_hostile_member(tmp_path):
    if os.geteuid() != 0:
        unavailable("mounting a stick image needs root")
    work = Path(tempfile.mkdtemp(prefix="conj-restore-tar-"))
    os.chmod(work, 0o755)  # the student must be able to reach their home (tmp_path is root's 0700)
    outside = work / "outside"
    outside.mkdir()
    image = make_ext4_stick(tmp_path / "usb-tar.img", original_format_stick(tmp_path / "tree", outside))
    mount_point = tmp_path / "stick"
    mount_point.mkdir()
    subprocess.run(["mount", "-o", "loop,ro,nosuid,nodev", str(image), str(mount_point)], check=True)
    state, homes = tmp_path / "state", work / "homes"
    state.mkdir()
    (state / "uids.json").write_text(json.dumps({"users": {"ana": ANA, "ben": ANA + 1}}))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "conjuringd.ctl", "--state-dir", str(state), "restore",
             str(mount_point / "conjuring" / "custom" / "home_backup"), "--home-dir", str(homes)],
            capture_output=True, text=True, cwd=REPO, timeout=60)
    finally:
        subprocess.run(["umount", "-d", str(mount_point)], check=False)
    try:
        assert result.returncode == 1, result
        for refused in ("'../escaped': unsafe path", f"'{outside}/absolute': unsafe path", "ana/null: a device node",
                        "ana/shadow: a hard link to '/etc/shadow'", "ana/bens: a hard link into another home"):
            assert refused in result.stderr, (refused, result.stderr)
        assert "restored 4," in result.stdout, result.stdout
        assert os.listdir(outside) == [] and sorted(os.listdir(work)) == ["homes", "outside"]
        assert sorted(os.listdir(homes / "ana")) == ["copy", "out", "rootshell"]
        for name in ("ana", "ana/rootshell", "ana/copy"):
            st = os.lstat(homes / name)
            assert (st.st_uid, st.st_gid) == (ANA, ANA), name
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), (name, oct(st.st_mode))
        who = subprocess.run(["setpriv", f"--reuid={ANA}", f"--regid={ANA}", "--clear-groups", str(homes / "ana" / "copy")],
                             input="id -u\n", capture_output=True, text=True, timeout=30)
        assert who.stdout.strip() == str(ANA), who
    finally:
        shutil.rmtree(work)
