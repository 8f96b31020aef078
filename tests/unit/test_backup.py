import hashlib
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from conjuringd.backup import MANIFEST, BackupError, backup_homes, check_space, restore_homes

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be kept as root")


def make_homes(root: Path) -> Path:
    files = {
        "alice/notes.txt": (b"alice's notes\n", 1001, 0o600),
        "alice/work/plot.ipynb": (b'{"cells": []}', 1001, 0o644),
        "bob/run.sh": (b"#!/bin/sh\necho hi\n", 1002, 0o755),
        "bob/empty": (b"", 1002, 0o640),
    }
    for i, (rel, (data, uid, mode)) in enumerate(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chown(path, uid, uid)
        os.chown(path.parent, uid, uid)
        path.chmod(mode)
        os.utime(path, ns=(1_700_000_000_000_000_000 + i, 1_700_000_000_000_000_000 + i))
    (root / "bob" / os.fsdecode(b"r\xe9sum\xe9.txt")).write_bytes(b"latin-1 name")
    (root / "alice" / "shared").symlink_to("/shared")
    (root / "alice" / "work").chmod(0o750)
    return root


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = path.relative_to(root).as_posix()
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path), st.st_uid)
            elif path.is_dir():
                out[rel] = ("dir", st.st_mode, st.st_uid, st.st_gid)
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return out


@NEEDS_ROOT
@pytest.mark.parametrize("archive", [True, False])
def test_round_trip_keeps_content_owners_modes_mtimes(tmp_path, archive):
    homes = make_homes(tmp_path / "homes")
    result = backup_homes(homes, tmp_path / "backup", archive=archive)
    assert result.mode == ("archive" if archive else "mirror")
    assert len(result.written) == 6 and result.unchanged == 0
    restored = restore_homes(tmp_path / "backup", tmp_path / "new")
    assert restored.problems == () and len(restored.restored) == 6
    assert snapshot(tmp_path / "new") == snapshot(homes)
    manifest = json.loads((tmp_path / "backup" / MANIFEST).read_text())
    shas = {e["path"]: e["sha256"] for e in manifest["entries"]}
    assert shas["alice/notes.txt"] == hashlib.sha256(b"alice's notes\n").hexdigest()


@pytest.mark.parametrize("archive", [True, False])
def test_second_backup_writes_only_the_change_and_deletes_nothing(tmp_path, archive):
    homes = make_homes(tmp_path / "homes")
    dest = tmp_path / "backup"
    first = backup_homes(homes, dest, archive=archive)
    with open(homes / "alice/notes.txt", "ab") as f:
        f.write(b"more\n")
    (homes / "bob/run.sh").unlink()
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    second = backup_homes(homes, dest, archive=archive)
    assert second.written == ("alice/notes.txt",)
    assert second.bytes_written == len(b"alice's notes\nmore\n")
    after = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    assert set(before) <= set(after)  # nothing deleted
    rewritten = {p.relative_to(dest).as_posix() for p in after if before.get(p) != after[p]}
    if archive:
        assert second.archive and second.archive != first.archive
        assert rewritten == {second.archive, MANIFEST}
        with tarfile.open(dest / second.archive) as tar:
            assert tar.getnames() == ["alice/notes.txt"]
    else:
        assert rewritten == {"homes/alice/notes.txt", MANIFEST}
        assert (dest / "homes/bob/run.sh").exists()
    restore_homes(dest, tmp_path / "new")
    assert (tmp_path / "new/alice/notes.txt").read_bytes() == b"alice's notes\nmore\n"
    assert not (tmp_path / "new/bob/run.sh").exists()  # the manifest is the latest state


def test_unchanged_backup_writes_nothing(tmp_path):
    homes = make_homes(tmp_path / "homes")
    backup_homes(homes, tmp_path / "b", archive=True)
    listing = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "b").iterdir())
    again = backup_homes(homes, tmp_path / "b", archive=True)
    assert again.written == () and again.unchanged > 0
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "b").iterdir()) == listing


def test_restore_keeps_newer_files_unless_forced(tmp_path):
    homes = make_homes(tmp_path / "homes")
    backup_homes(homes, tmp_path / "b", archive=True)
    target = tmp_path / "homes/alice/notes.txt"
    target.write_bytes(b"edited after the backup")
    result = restore_homes(tmp_path / "b", homes)
    assert result.kept_newer == ("alice/notes.txt",) and result.restored == ()
    assert target.read_bytes() == b"edited after the backup"
    forced = restore_homes(tmp_path / "b", homes, force=True)
    assert forced.restored == ("alice/notes.txt",)
    assert target.read_bytes() == b"alice's notes\n"
    assert restore_homes(tmp_path / "b", homes).identical == 6


def test_damaged_backup_copy_is_not_installed(tmp_path):
    homes = make_homes(tmp_path / "homes")
    backup_homes(homes, tmp_path / "b", archive=False)
    (tmp_path / "b/homes/alice/notes.txt").write_bytes(b"bit rot!!!!!!!")
    result = restore_homes(tmp_path / "b", tmp_path / "new")
    assert any("checksum mismatch" in p for p in result.problems)
    assert not (tmp_path / "new/alice/notes.txt").exists()
    assert not [p for p in (tmp_path / "new/alice").iterdir() if "conjuring-tmp" in p.name]


def test_restore_never_writes_through_a_symlink_in_the_homes(tmp_path):
    homes = make_homes(tmp_path / "homes")
    backup_homes(homes, tmp_path / "b", archive=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "target/alice").mkdir(parents=True)
    (tmp_path / "target/alice/work").symlink_to(outside)  # a student's trap
    result = restore_homes(tmp_path / "b", tmp_path / "target")
    assert any(p.startswith("alice/work/plot.ipynb") for p in result.problems)
    assert list(outside.iterdir()) == []


def test_manifest_with_escaping_path_is_refused(tmp_path):
    (tmp_path / "b").mkdir()
    entry = {"path": "../evil", "kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0}
    (tmp_path / "b" / MANIFEST).write_text(json.dumps({"mode": "mirror", "entries": [entry]}))
    with pytest.raises(BackupError, match="unsafe path"):
        restore_homes(tmp_path / "b", tmp_path / "new")


def test_restore_without_manifest(tmp_path):
    with pytest.raises(BackupError, match="not a home backup"):
        restore_homes(tmp_path, tmp_path / "new")


def test_backup_never_reads_through_a_symlink(tmp_path):
    homes = tmp_path / "homes"
    (homes / "eve").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_bytes(b"TOP SECRET")
    (homes / "eve" / "s").symlink_to(secret)
    backup_homes(homes, tmp_path / "b", archive=False)
    assert os.readlink(tmp_path / "b/homes/eve/s") == str(secret)
    assert b"TOP SECRET" not in b"".join(p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file() and not p.is_symlink())


def test_no_space(tmp_path):
    with pytest.raises(BackupError, match="MB are free"):
        check_space(tmp_path, 10**18, fat=False)
    with pytest.raises(BackupError, match="4 GB|MB are free"):
        check_space(tmp_path, 5 * 1024**3, fat=True)
    check_space(tmp_path, 1000, fat=True)


def test_planted_symlinks_at_the_destination_are_never_followed(tmp_path):
    homes = make_homes(tmp_path / "homes")
    dest = tmp_path / "stick"
    dest.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (dest / MANIFEST).symlink_to(victim)
    with pytest.raises(BackupError, match="unreadable"):
        backup_homes(homes, dest, archive=True)
    (dest / MANIFEST).unlink()
    for second in range(-1, 3):  # the temp names an attacker would guess
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + second))
        (dest / f".homes-0001-{stamp}.tar.tmp").symlink_to(victim)
    backup_homes(homes, dest, archive=True)
    assert victim.read_text() == "precious"
    assert len([p for p in dest.iterdir() if p.name.endswith(".tar")]) == 1
