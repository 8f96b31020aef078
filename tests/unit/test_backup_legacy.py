"""Restoring the original Conjuring's backups: its rsync mirror (home_backup/<user>/) and its
home.tar (made with GNU tar -cp, grown with tar -up), and hostile versions of both."""

import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from conjuringd.backup_legacy import backup_format, restore_any, restore_tar, restore_tree, tar_items
from conjuringd.backup_manifest import BackupError
from tests.support.legacy_backup import MTIME, add, hostile_tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be set as root")

ORIGINAL = {"ana": 2000, "ben": 2001}  # the original's useradd -K UID_MIN=2000, in users.csv order
BOX = {"ana": 2011, "ben": 2010}  # this box's stable UIDs: ben was known first here


def original_homes(root: Path) -> Path:
    """custom/home/ of an original box (or its rsync backup): files owned by the original's UIDs."""
    files = {"ana/notes.txt": b"ana's notes\n", "ana/week1/plot.ipynb": b'{"cells": []}', "ben/run.sh": b"#!/bin/sh\n"}
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "ben" / "run.sh").chmod(0o755)
    (root / "ana" / "shared").symlink_to("/shared")  # made by the original's csv2useradd.sh
    for dirpath, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = Path(dirpath) / name
            uid = ORIGINAL[path.relative_to(root).parts[0]]
            os.lchown(path, uid, uid)
            os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    for home in ORIGINAL:
        (root / home).chmod(0o755)  # useradd's default there: every student could read every home
    return root


def check_restored(homes: Path, notes: bytes = b"ana's notes\n") -> None:
    assert (homes / "ana" / "notes.txt").read_bytes() == notes
    assert (homes / "ana" / "week1" / "plot.ipynb").read_bytes() == b'{"cells": []}'
    assert os.readlink(homes / "ana" / "shared") == "/shared"
    assert stat.S_IMODE(os.stat(homes / "ben" / "run.sh").st_mode) == 0o755
    assert os.stat(homes / "ana" / "week1" / "plot.ipynb").st_mtime == MTIME
    for dirpath, dirs, names in os.walk(homes):
        for name in [*dirs, *names]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            want = BOX[path.relative_to(homes).parts[0]]
            assert (st.st_uid, st.st_gid) == (want, want), path  # the box's UID, never the original's
    for home in BOX:
        assert stat.S_IMODE(os.stat(homes / home).st_mode) == 0o750, "a home is closed to the other students"


def test_rsync_mirror_is_restored_with_the_boxs_owners(tmp_path):
    backup = original_homes(tmp_path / "home_backup")
    assert backup_format(backup) == "tree"
    result = restore_any(backup, tmp_path / "homes", owners=BOX)
    assert result.problems == ()
    assert sorted(result.restored) == ["ana/notes.txt", "ana/shared", "ana/week1/plot.ipynb", "ben/run.sh"]
    check_restored(tmp_path / "homes")
    again = restore_any(backup, tmp_path / "homes", owners=BOX)
    assert again.restored == () and again.identical == 4


def gnu_tar(args: list[str], cwd: Path) -> None:
    subprocess.run(["tar", *args], cwd=cwd, check=True, capture_output=True)


def test_home_tar_made_and_updated_as_the_original_did_restores_the_latest_copies(tmp_path):
    homes = original_homes(tmp_path / "custom_home")
    backup = tmp_path / "home_backup"
    backup.mkdir()
    gnu_tar(["-cp", "--exclude-backups", "-f", str(backup / "home.tar"), "ana", "ben"], homes)
    (homes / "ana" / "notes.txt").write_bytes(b"ana's notes, week 2\n")
    os.utime(homes / "ana" / "notes.txt", (MTIME + 100, MTIME + 100))
    gnu_tar(["-up", "--exclude-backups", "-f", str(backup / "home.tar"), "ana", "ben"], homes)
    with tarfile.open(backup / "home.tar") as tar:
        assert [m.name for m in tar].count("ana/notes.txt") == 2, "tar -u appended a second copy"
    assert backup_format(backup) == "tar"
    result = restore_any(backup, tmp_path / "homes", owners=BOX)
    assert result.problems == ()
    check_restored(tmp_path / "homes", notes=b"ana's notes, week 2\n")
    assert os.stat(tmp_path / "homes" / "ana" / "notes.txt").st_mtime == MTIME + 100


def test_files_newer_on_the_box_are_kept_unless_forced(tmp_path):
    backup = original_homes(tmp_path / "home_backup")
    restore_tree(backup, tmp_path / "homes", owners=BOX)
    mine = tmp_path / "homes" / "ana" / "notes.txt"
    mine.write_bytes(b"written on the box this week\n")
    assert restore_tree(backup, tmp_path / "homes", owners=BOX).kept_newer == ("ana/notes.txt",)
    assert mine.read_bytes() == b"written on the box this week\n"
    restore_tree(backup, tmp_path / "homes", owners=BOX, force=True)
    assert mine.read_bytes() == b"ana's notes\n"


@pytest.fixture
def reachable(tmp_path):
    """A folder the students can reach (tmp_path is root's, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="conj-legacy-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_a_hostile_home_tar_is_refused_or_neutralised_entry_by_entry(reachable):
    tmp_path = reachable
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"the box's")
    backup = tmp_path / "home_backup"
    backup.mkdir()
    hostile_tar(backup / "home.tar", outside)
    homes = tmp_path / "box" / "homes"
    result = restore_any(backup, homes, owners=BOX)
    problems = "\n".join(result.problems)
    for refused in ("'../escaped'", "'ana/../../escaped2'", f"'{outside}/absolute'", "ana/null: a device node",
                    "ana/disk: a device node", "ana/pipe: a device node", "ana/shadow: a hard link to '/etc/shadow'",
                    "ana/up: a hard link to '../../outside/secret'", "ana/bens: a hard link into another home",
                    "ana/out/planted: ", "toplevel-file: not a home folder"):
        assert refused in problems, refused
    assert sorted(os.listdir(outside)) == ["secret"] and not (tmp_path / "escaped").exists()
    assert sorted(os.listdir(tmp_path / "box")) == ["homes"]
    assert sorted(os.listdir(homes / "ana")) == ["copy", "out", "rootshell"]
    assert (homes / "ana" / "copy").read_bytes() == (homes / "ana" / "rootshell").read_bytes()
    assert os.stat(homes / "ana" / "copy").st_nlink == 1, "a hard link becomes a copy, never a link"
    for dirpath, dirs, names in os.walk(homes):
        for name in [*dirs, *names]:
            st = os.lstat(Path(dirpath) / name)
            assert st.st_uid == BOX[(Path(dirpath) / name).relative_to(homes).parts[0]]
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), (name, oct(st.st_mode))
            assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode), name
    who = subprocess.run(["setpriv", f"--reuid={BOX['ana']}", f"--regid={BOX['ana']}", "--clear-groups",
                          str(homes / "ana" / "rootshell")], input="id -u\n", capture_output=True, text=True, timeout=30)
    assert who.stdout.strip() == str(BOX["ana"]), who


def test_a_later_refused_copy_does_not_bring_back_nor_keep_the_earlier_one(tmp_path):
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        add(tar, "ana/x", b"first", mode=0o644)
        add(tar, "ana/x", type=tarfile.FIFOTYPE)
    with tarfile.open(tmp_path / "t.tar") as tar:
        items, problems = tar_items(tar)
    assert items == [] and problems == ["ana/x: a device node, FIFO or other special file: refused"]


def test_a_tar_declaring_more_than_the_disk_holds_writes_nothing(tmp_path, monkeypatch):
    with tarfile.open(tmp_path / "home.tar", "w") as tar:
        add(tar, "ana/big", b"0123456789", mode=0o644)
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 1, 1, 1, 1, 1, 1, 0, 255)))
    with pytest.raises(BackupError, match="MB are free"):
        restore_tar(tmp_path / "home.tar", tmp_path / "homes", owners=BOX)
    assert not (tmp_path / "homes" / "ana" / "big").exists()


def test_a_damaged_or_compressed_tar_is_a_clear_error(tmp_path):
    (tmp_path / "home.tar").write_bytes(b"\x1f\x8b" + b"\0" * 600)
    with pytest.raises(BackupError, match="not a readable"):
        restore_any(tmp_path, tmp_path / "homes", owners=BOX)


def test_a_hostile_mirror_refuses_specials_and_hard_links_out(tmp_path):
    backup = original_homes(tmp_path / "home_backup")
    os.mkfifo(backup / "ana" / "pipe")  # would block a reader that opened it
    secret = tmp_path / "not-a-home.txt"
    secret.write_bytes(b"root's")
    os.link(secret, backup / "ana" / "linked")  # another name of a file that is not ana's
    os.link(backup / "ana" / "notes.txt", backup / "ana" / "notes-again.txt")  # ana's own: fine
    result = restore_tree(backup, tmp_path / "homes", owners=BOX)
    problems = "\n".join(result.problems)
    assert "ana/pipe: not a file, folder or symlink" in problems
    assert "ana/linked: has 2 hard links and belongs to UID 0" in problems
    assert not (tmp_path / "homes" / "ana" / "linked").exists() and not (tmp_path / "homes" / "ana" / "pipe").exists()
    assert (tmp_path / "homes" / "ana" / "notes-again.txt").read_bytes() == b"ana's notes\n"


def test_a_folder_that_is_no_backup_says_so(tmp_path):
    (tmp_path / "b").mkdir()
    with pytest.raises(BackupError, match="not a home backup"):
        restore_any(tmp_path / "b", tmp_path / "homes")
    original_homes(tmp_path / "stick" / "conjuring" / "custom" / "home_backup")
    (tmp_path / "stick" / "conjuring" / "custom" / "users.csv").write_text("username,password\nana,x\n")
    with pytest.raises(BackupError, match="not a backup but holds one: give .*/conjuring/custom/home_backup"):
        restore_any(tmp_path / "stick" / "conjuring", tmp_path / "homes")
    with pytest.raises(BackupError, match="holds one"):
        restore_any(tmp_path / "stick" / "conjuring" / "custom", tmp_path / "homes")
    assert not (tmp_path / "homes").exists(), "a configuration folder is never taken for homes"


def test_conjuringctl_restore_reads_the_originals_tar(tmp_path):
    homes = original_homes(tmp_path / "custom_home")
    backup = tmp_path / "stick" / "conjuring" / "custom" / "home_backup"
    backup.mkdir(parents=True)
    gnu_tar(["-cpf", str(backup / "home.tar"), "ana", "ben"], homes)
    state = tmp_path / "state"
    state.mkdir()
    (state / "uids.json").write_text('{"users": {"ana": 2011, "ben": 2010}}')
    done = subprocess.run([sys.executable, "-m", "conjuringd.ctl", "--state-dir", str(state), "restore", str(backup),
                           "--home-dir", str(tmp_path / "homes")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    assert "restored 4, identical 0, kept newer 0, skipped 0" in done.stdout
    check_restored(tmp_path / "homes")
