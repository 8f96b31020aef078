import hashlib
import json
import os
import re
import stat
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
    os.lchown(root / "alice" / "shared", 1001, 1001)  # a home holds its student's files only
    os.chown(root / "bob" / os.fsdecode(b"r\xe9sum\xe9.txt"), 1002, 1002)
    (root / "alice" / "work").chmod(0o750)
    return root


OWNERS = {"alice": 1001, "bob": 1002}  # the box's UIDs of the students, for homes not on the box yet


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
    restored = restore_homes(tmp_path / "backup", tmp_path / "new", owners=OWNERS)
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
    restore_homes(dest, tmp_path / "new", owners=OWNERS)
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
    result = restore_homes(tmp_path / "b", tmp_path / "new", owners=OWNERS)
    assert any("damaged" in p for p in result.problems)
    assert not (tmp_path / "new/alice/notes.txt").exists()
    assert not [p for p in (tmp_path / "new/alice").iterdir() if "conjuring-tmp" in p.name]


def test_restore_never_writes_through_a_symlink_in_the_homes(tmp_path):
    homes = make_homes(tmp_path / "homes")
    backup_homes(homes, tmp_path / "b", archive=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "target/alice").mkdir(parents=True)
    os.chown(tmp_path / "target/alice", 1001, 1001)
    (tmp_path / "target/alice/work").symlink_to(outside)  # a student's trap
    result = restore_homes(tmp_path / "b", tmp_path / "target")
    assert any(p.startswith("alice/work/plot.ipynb") for p in result.problems)
    assert list(outside.iterdir()) == []


def test_manifest_with_escaping_path_is_refused(tmp_path):
    (tmp_path / "b").mkdir()
    entry = {"path": "../evil", "kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0}
    (tmp_path / "b" / MANIFEST).write_text(json.dumps({"mode": "mirror", "entries": [entry]}))
    result = restore_homes(tmp_path / "b", tmp_path / "new", owners={"..": 1001})
    assert result.problems == ("MANIFEST.json entry 1 (../evil): unsafe path '../evil': skipped",)
    assert not (tmp_path / "evil").exists() and result.restored == ()


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


def crafted_backup(folder: Path, entries: list[dict], files: dict[str, bytes]) -> Path:
    """A backup as an attacker writes it: any manifest, any bytes in homes/."""
    for rel, data in files.items():
        (folder / "homes" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "homes" / rel).write_bytes(data)
    (folder / MANIFEST).write_text(json.dumps({"version": 1, "mode": "mirror", "entries": entries}))
    return folder


def test_crafted_backup_asking_for_setuid_root_gets_neither(tmp_path):
    payload = b"#!/bin/sh\nexec /bin/sh -p\n"
    sha = hashlib.sha256(payload).hexdigest()
    entries = [
        {"path": "ana", "kind": "dir", "mode": 0o7777, "uid": 0, "gid": 0, "mtime_ns": 0},
        {"path": "ana/rootshell", "kind": "file", "mode": 0o4755, "uid": 0, "gid": 0, "mtime_ns": 0,
         "size": len(payload), "sha256": sha},
        {"path": "ana/nosum", "kind": "file", "mode": 0o6755, "uid": 0, "gid": 0, "mtime_ns": 0,
         "size": len(payload), "sha256": ""},
        {"path": "ana/short", "kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0,
         "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
    ]
    src = crafted_backup(tmp_path / "b", entries, {"ana/rootshell": payload, "ana/nosum": payload, "ana/short": b"abcdef"})
    homes = tmp_path / "homes"
    (homes / "ana").mkdir(parents=True)
    os.chown(homes / "ana", 2001, 2001)
    result = restore_homes(src, homes)
    assert result.restored == ("ana/rootshell",)
    st = os.lstat(homes / "ana/rootshell")
    assert (st.st_uid, st.st_gid) == (2001, 2001) and stat.S_IMODE(st.st_mode) == 0o755  # owner forced, no setuid
    home = os.lstat(homes / "ana")
    assert (home.st_uid, stat.S_IMODE(home.st_mode)) == (2001, 0o777)  # no sticky, setgid on the folder either
    assert "ana/nosum: the backup records no checksum for it: skipped" in result.problems
    assert any(p.startswith("ana/short: the backup copy has more than the 3 bytes recorded") for p in result.problems)
    assert sorted(os.listdir(homes / "ana")) == ["rootshell"]


def test_restore_refuses_a_home_owned_by_root_or_unknown(tmp_path):
    data = b"x"
    entry = {"kind": "file", "mode": 0o644, "uid": 2001, "gid": 2001, "mtime_ns": 0, "size": 1,
             "sha256": hashlib.sha256(data).hexdigest()}
    src = crafted_backup(tmp_path / "b", [{**entry, "path": "root/x"}, {**entry, "path": "ghost/x"}],
                         {"root/x": data, "ghost/x": data})
    (tmp_path / "homes/root").mkdir(parents=True)  # owned by root, as the test runs
    result = restore_homes(src, tmp_path / "homes")
    assert result.restored == ()
    assert "root/ (1 entries): the home 'root' on this box belongs to root: skipped" in result.problems
    assert "ghost/ (1 entries): no home 'ghost' on this box and no known student of that name: skipped" in result.problems
    assert not (tmp_path / "homes/ghost").exists()


@pytest.mark.parametrize("body, message", [
    ("[]", "should hold an object, not list"),
    ('{"mode": "mirror", "entries": [], "evil": 1}', "unknown keys: evil"),
    ('{"version": 2}', "version 2"),
    ('{"mode": "rsync"}', 'mode should be "mirror" or "archive"'),
    ('{"entries": {}}', "entries should be a list"),
    ("[" * 100000 + "]" * 100000, "not JSON"),
    ("\xff", "not JSON"),
])
def test_manifest_that_is_not_one_is_a_clear_error(tmp_path, body, message):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / MANIFEST).write_bytes(body.encode("latin-1"))
    with pytest.raises(BackupError, match=re.escape(message)):
        restore_homes(tmp_path / "b", tmp_path / "new")
    with pytest.raises(BackupError, match=re.escape(message)):
        backup_homes(make_homes(tmp_path / "homes"), tmp_path / "b", archive=False)


@pytest.mark.parametrize("raw, problem", [
    ({"path": "a/x", "kind": "file", "mode": 0o644, "uid": 1, "gid": 1, "mtime_ns": 0, "evil": 1}, "unknown key 'evil'"),
    ({"path": "a/x", "kind": "file", "mode": "0644", "uid": 1, "gid": 1, "mtime_ns": 0}, "mode should be a whole number"),
    ({"path": "a/x", "kind": "file", "mode": 0o644, "uid": True, "gid": 1, "mtime_ns": 0}, "uid should be a whole number"),
    ({"path": "a/x", "kind": "file", "mode": 0o644, "uid": -1, "gid": 1, "mtime_ns": 0}, "uid -1 is out of range"),
    ({"path": "a/x", "kind": "device", "mode": 0o644, "uid": 1, "gid": 1, "mtime_ns": 0}, "kind 'device'"),
    ({"path": "a/x", "kind": "file", "mode": 0o644, "uid": 1, "gid": 1}, "lacks mtime_ns"),
    ({"path": "/etc/x", "kind": "file", "mode": 0o644, "uid": 1, "gid": 1, "mtime_ns": 0}, "unsafe path"),
    ({"path": "a/x", "kind": "file", "mode": 0o644, "uid": 1, "gid": 1, "mtime_ns": 0, "sha256": "zz"}, "64 hex"),
    ([1, 2], "should be an object, not list"),
])
def test_bad_manifest_entry_is_reported_and_skipped(tmp_path, raw, problem):
    good = {"path": "ana/ok", "kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0, "size": 2,
            "sha256": hashlib.sha256(b"ok").hexdigest()}
    src = crafted_backup(tmp_path / "b", [raw, good], {"ana/ok": b"ok"})
    result = restore_homes(src, tmp_path / "homes", owners={"ana": 2001, "a": 2002})
    assert result.restored == ("ana/ok",)
    assert len(result.problems) == 1 and result.problems[0].startswith("MANIFEST.json entry 1")
    assert problem in result.problems[0] and result.problems[0].endswith(": skipped")


def test_fifos_planted_in_a_backup_never_block(tmp_path):
    """The stick worker used to hang for ever opening these."""
    homes = make_homes(tmp_path / "homes")
    dest = tmp_path / "stick"
    dest.mkdir()
    os.mkfifo(dest / MANIFEST)
    with pytest.raises(BackupError, match=r"MANIFEST.json is a named pipe \(FIFO\), not a regular file"):
        backup_homes(homes, dest, archive=False)
    os.unlink(dest / MANIFEST)
    (dest / "homes/alice").mkdir(parents=True)
    os.mkfifo(dest / "homes/alice/.notes.txt.conjuring-tmp")  # the old fixed temp name
    result = backup_homes(homes, dest, archive=False)
    assert "alice/notes.txt" in result.written
    assert (dest / "homes/alice/notes.txt").read_bytes() == b"alice's notes\n"
    os.unlink(dest / "homes/alice/notes.txt")
    os.mkfifo(dest / "homes/alice/notes.txt")  # a FIFO where restore reads a file
    result = restore_homes(dest, tmp_path / "new", owners=OWNERS)
    assert any(p.startswith("alice/notes.txt: the backup copy cannot be read") and "FIFO" in p for p in result.problems)
    assert "bob/run.sh" in result.restored
