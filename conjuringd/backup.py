"""Backups of the students' homes, and putting them back.

On filesystems that cannot keep owners and modes (FAT, exFAT, NTFS) a backup is
a series of tar archives; elsewhere a mirror tree. Either way `MANIFEST.json`
lists every file with its SHA-256, owner, mode and mtime and says where its
latest copy is. Backups are incremental (only what changed since the manifest
is written) and never delete anything already at the destination.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Mapping

import structlog

from conjuringd.backup_manifest import MANIFEST, BackupError, Entry, Manifest, check_rel, read_manifest, write_manifest
from conjuringd.config.problems import ConjuringError
from conjuringd.sticks.mountinfo import containing_mount, needs_archive, read_mountinfo
from conjuringd.sticks.safewrite import HashingReader, install_file, install_symlink, open_below, open_dir, open_regular, set_dir_meta

log = structlog.get_logger(__name__)

MIRROR_DIR = "homes"
CHUNK = 1 << 20
FAT_MAX_FILE = 4 * 1024**3 - 1


@dataclass(frozen=True)
class BackupResult:
    mode: str  # "archive" | "mirror"
    written: tuple[str, ...]  # entries written this time
    unchanged: int
    bytes_written: int
    archive: str = ""  # the tar written this time ("" if none)
    skipped: tuple[str, ...] = ()  # special files not backed up

    def summary(self) -> str:
        where = f" into {self.archive}" if self.archive else ""
        return f"{len(self.written)} changed ({self.bytes_written} bytes){where}, {self.unchanged} unchanged"


@dataclass(frozen=True)
class RestoreResult:
    restored: tuple[str, ...]
    identical: int
    kept_newer: tuple[str, ...]  # newer on the box, not overwritten (no force)
    problems: tuple[str, ...] = ()


# --- scanning the homes -----------------------------------------------------------


def scan_homes(home_dir: Path) -> tuple[dict[str, Entry], list[str]]:
    """Every dir, regular file and symlink below home_dir (no hashing), and what was skipped.
    Iterative: a student's folder thousands of levels deep cannot exhaust the recursion limit."""
    entries: dict[str, Entry] = {}
    skipped: list[str] = []
    stack = [home_dir]
    while stack:
        folder = stack.pop()
        for item in sorted(os.scandir(folder), key=lambda e: e.name, reverse=True):
            path = Path(item.path)
            rel = path.relative_to(home_dir).as_posix()
            st = item.stat(follow_symlinks=False)
            kind = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink"}.get(stat.S_IFMT(st.st_mode))
            if kind is None:
                skipped.append(rel)
                continue
            if kind == "dir":
                stack.append(path)
            target = os.readlink(path) if kind == "symlink" else ""
            size = st.st_size if kind == "file" else 0
            entries[rel] = Entry(rel, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, size, target=target)
    return dict(sorted(entries.items())), sorted(skipped)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_space(dest: Path, needed: int, fat: bool) -> None:
    st = os.statvfs(dest)
    free = st.f_bavail * st.f_frsize
    if needed > free:
        raise BackupError(f"the backup needs {needed // 2**20 + 1} MB but only {free // 2**20} MB are free on {dest}")
    if fat and needed > FAT_MAX_FILE:
        raise BackupError(f"the backup archive would be {needed // 2**20} MB, more than FAT's 4 GB file limit")


def _want_archive(dest: Path, archive: bool | None) -> bool:
    if archive is not None:
        return archive
    mount = containing_mount(read_mountinfo(), dest)
    return bool(mount and needs_archive(mount.fstype))


# --- backup ----------------------------------------------------------------------


def _write_mirror(home_dir: Path, dest: Path, changed: list[Entry]) -> tuple[dict[str, Entry], int]:
    written, nbytes = {}, 0
    for entry in changed:
        parts = PurePosixPath(entry.path).parts
        dir_fd = open_dir(dest, (MIRROR_DIR, *parts[:-1]))
        try:
            if entry.kind == "symlink":
                install_symlink(dir_fd, parts[-1], entry)
                written[entry.path] = entry
                continue
            with open_below(home_dir, entry.path) as src:
                sha = install_file(dir_fd, parts[-1], entry, src)
            written[entry.path] = Entry(**{**vars(entry), "sha256": sha})
            nbytes += entry.size
        finally:
            os.close(dir_fd)
    return written, nbytes


def _next_archive_name(dest: Path) -> str:
    seq = 1 + len([p for p in dest.iterdir() if p.name.startswith("homes-") and p.name.endswith(".tar")])
    return f"homes-{seq:04d}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tar"


def _write_archive(home_dir: Path, dest: Path, changed: list[Entry]) -> tuple[dict[str, Entry], int, str]:
    name = _next_archive_name(dest)
    tmp = dest / f".{name}.tmp"
    written: dict[str, Entry] = {}
    tmp.unlink(missing_ok=True)  # left by an interrupted backup (never followed if it is a symlink)
    try:
        exclusive = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(tmp, exclusive, 0o644), "wb") as raw:
            _fill_archive(raw, home_dir, changed, name, written)
            raw.flush()
            os.fsync(raw.fileno())
        nbytes = sum(e.size for e in written.values() if e.kind == "file")
        os.rename(tmp, dest / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written, nbytes, name


def _fill_archive(raw, home_dir: Path, changed: list[Entry], name: str, written: dict[str, Entry]) -> None:
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in changed:
            if entry.kind == "file":
                h = hashlib.sha256()
                with open_below(home_dir, entry.path) as src:
                    info = tar.gettarinfo(arcname=entry.path, fileobj=src)
                    tar.addfile(info, HashingReader(src, h))
                entry = Entry(**{**vars(entry), "size": info.size, "sha256": h.hexdigest()})
            else:
                tar.addfile(tar.gettarinfo(str(home_dir / entry.path), arcname=entry.path))
            written[entry.path] = Entry(**{**vars(entry), "archive": name})


def _count_files(entries: dict[str, Entry]) -> int:
    return sum(1 for e in entries.values() if e.kind != "dir")


def backup_homes(home_dir: Path, dest: Path, *, archive: bool | None = None) -> BackupResult:
    """Back up every home below `home_dir` into `dest` (incremental, never deleting). Blocking."""
    dest.mkdir(parents=True, exist_ok=True)
    use_archive = _want_archive(dest, archive)
    mode = "archive" if use_archive else "mirror"
    previous = read_manifest(dest)
    old = previous.entries if previous and previous.mode == mode else {}
    current, skipped = scan_homes(home_dir)
    changed = [e for rel, e in current.items() if e.kind != "dir" and not e.same_as(old.get(rel))]
    needed = sum(e.size for e in changed) + 1024 * (len(changed) + 10) + 400 * len(current)
    check_space(dest, needed, fat=use_archive)
    if previous and not changed and set(current) == set(old) and all(e.same_as(old[r]) for r, e in current.items()):
        log.info("backup_unchanged", dest=str(dest), entries=len(current))
        return BackupResult(mode, (), _count_files(current), 0, skipped=tuple(skipped))
    archive_name = ""
    if use_archive:
        written, nbytes, archive_name = _write_archive(home_dir, dest, changed)
    else:
        written, nbytes = _write_mirror(home_dir, dest, changed)
        set_dir_meta(dest, [e for e in current.values() if e.kind == "dir"], under=(MIRROR_DIR,))
    entries = {}
    for rel, entry in current.items():
        before = old.get(rel)
        entries[rel] = written.get(rel) or (Entry(**{**vars(entry), "sha256": before.sha256, "archive": before.archive}) if before else entry)
    write_manifest(dest, Manifest(mode, entries))
    result = BackupResult(mode, tuple(sorted(written)), _count_files(current) - len(written), nbytes, archive_name, tuple(skipped))
    log.info("backup_written", dest=str(dest), mode=mode, written=len(written), bytes=nbytes, archive=archive_name)
    return result


# --- restore ---------------------------------------------------------------------


def _needs_restore(home_dir: Path, entry: Entry, force: bool) -> str:
    """"write", "identical" or "newer" for one manifest entry."""
    target = home_dir / entry.path
    try:
        st = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        return "write"
    if entry.kind == "symlink" and stat.S_ISLNK(st.st_mode) and os.readlink(target) == entry.target:
        return "identical"
    if entry.kind == "file" and stat.S_ISREG(st.st_mode) and st.st_size == entry.size and _sha_below(home_dir, entry.path) == entry.sha256:
        return "identical"
    if st.st_mtime_ns > entry.mtime_ns and not force:
        return "newer"
    return "write"


def _sha_below(root: Path, rel: str) -> str:
    h = hashlib.sha256()
    try:
        with open_below(root, rel) as handle:  # no link at any level, no FIFO a student swapped in
            while chunk := handle.read(CHUNK):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


def _install(home_dir: Path, entry: Entry, reader) -> None:
    parts = PurePosixPath(entry.path).parts
    dir_fd = open_dir(home_dir, parts[:-1])
    try:
        if entry.kind == "symlink":
            install_symlink(dir_fd, parts[-1], entry)
        else:
            install_file(dir_fd, parts[-1], entry, reader, size=entry.size)
    finally:
        os.close(dir_fd)


def _open_archive(src: Path, name: str):
    if check_rel(name) or "/" in name or not name.endswith(".tar"):
        raise BackupError(f"unsafe archive name in manifest: {name!r}")
    return open_tar(src / name, "tar archive")


def open_tar(path: Path, what: str):
    """(file, tarfile) of an uncompressed tar at `path`, opened without following links; BackupError names
    `what` when it is not one."""
    try:
        raw = os.fdopen(open_regular(path), "rb")
    except OSError as exc:
        raise BackupError(f"{path.name}: {exc.strerror or exc}") from exc
    try:
        return raw, tarfile.open(fileobj=raw, mode="r:")
    except (tarfile.TarError, ValueError, EOFError) as exc:
        raw.close()
        raise BackupError(f"{path.name} is not a readable {what}: {exc}") from exc


def _sources(src: Path, manifest: Manifest, wanted: list[Entry], problems: list[str]):
    """(entry, reader) for every wanted entry, reading each archive once."""
    if manifest.mode == "mirror":
        for entry in wanted:
            if entry.kind == "symlink":
                yield entry, None
                continue
            try:
                reader = open_below(src / MIRROR_DIR, entry.path)
            except OSError as exc:
                problems.append(f"{entry.path}: the backup copy cannot be read: {exc.strerror or exc}: skipped")
                continue
            with reader:
                yield entry, reader
        return
    by_archive: dict[str, dict[str, Entry]] = {}
    for entry in wanted:
        by_archive.setdefault(entry.archive, {})[entry.path] = entry
    for name, entries in sorted(by_archive.items()):
        raw, tar = _open_archive(src, name)
        with raw, tar:
            try:
                for member in tar:
                    entry = entries.pop(member.name, None)
                    if entry is not None and entry.kind == "file" and not member.isreg():
                        problems.append(f"{entry.path}: not a regular file in {name}: skipped")
                    elif entry is not None:
                        yield entry, (tar.extractfile(member) if entry.kind == "file" else None)
            except (tarfile.TarError, ValueError, EOFError) as exc:
                problems.append(f"{name}: damaged after some files ({exc})")
        problems.extend(f"{rel}: missing from {name}: skipped" for rel in sorted(entries))


def _owner(home_dir: Path, home: str, owners: Mapping[str, int]) -> tuple[int, int] | str:
    """Who owns what is restored into home `home`: the owner of that home on this box, or the box's
    own UID for that student; never what the backup says. A string says why there is none."""
    try:
        st = os.lstat(home_dir / home)
    except FileNotFoundError:
        uid = owners.get(home)
        return (uid, uid) if uid else f"no home {home!r} on this box and no known student of that name"
    if not stat.S_ISDIR(st.st_mode):
        return f"{home!r} on this box is not a folder"
    if st.st_uid == 0:
        return f"the home {home!r} on this box belongs to root"
    return st.st_uid, st.st_gid


def safe_entries(manifest: Manifest, home_dir: Path, owners: Mapping[str, int]) -> tuple[list[Entry], list[str]]:
    """The manifest's entries as they may be restored: owner forced to the home's owner, no
    setuid/setgid/sticky bit, files with a checksum; the others reported and skipped."""
    problems = list(manifest.problems)
    kept = []
    resolved: dict[str, tuple[int, int] | str] = {}
    homeless: dict[str, int] = {}
    for entry in manifest.entries.values():
        home = PurePosixPath(entry.path).parts[0]
        owner = resolved.setdefault(home, _owner(home_dir, home, owners))
        if isinstance(owner, str):
            homeless[home] = homeless.get(home, 0) + 1
        elif entry.kind == "file" and not entry.sha256:
            problems.append(f"{entry.path}: the backup records no checksum for it: skipped")
        elif entry.kind == "file" and entry.archive == "" and manifest.mode == "archive":
            problems.append(f"{entry.path}: the backup does not say which archive holds it: skipped")
        else:
            kept.append(replace(entry, uid=owner[0], gid=owner[1], mode=entry.mode & 0o777))
    problems += [f"{home}/ ({count} entries): {resolved[home]}: skipped" for home, count in sorted(homeless.items())]
    return kept, problems


def restore_homes(src: Path, home_dir: Path, *, force: bool = False, owners: Mapping[str, int] | None = None) -> RestoreResult:
    """Put the backup in `src` back into `home_dir`; newer files there are kept unless `force`.
    `owners`: the box's UIDs by student name, for homes not (yet) on the box."""
    manifest = read_manifest(src)
    if manifest is None:
        raise BackupError(f"no {MANIFEST} in {src}: not a home backup")
    home_dir.mkdir(parents=True, exist_ok=True)
    entries, problems = safe_entries(manifest, home_dir, owners or {})
    restored, dirs = [], []
    for entry in sorted((e for e in entries if e.kind == "dir"), key=lambda e: e.path):
        try:
            os.close(open_dir(home_dir, PurePosixPath(entry.path).parts))
            dirs.append(entry)
        except OSError as exc:
            problems.append(f"{entry.path}/: {exc.strerror} (a file or symlink is in the way)")
    verdicts = {e.path: _needs_restore(home_dir, e, force) for e in entries if e.kind != "dir"}
    by_path = {e.path: e for e in entries}
    wanted = [by_path[rel] for rel, v in sorted(verdicts.items()) if v == "write"]
    for entry, reader in _sources(src, manifest, wanted, problems):
        try:
            _install(home_dir, entry, reader)
            restored.append(entry.path)
        except (OSError, ConjuringError) as exc:
            problems.append(f"{entry.path}: {exc}")
    set_dir_meta(home_dir, dirs)
    kept = tuple(rel for rel, v in sorted(verdicts.items()) if v == "newer")
    result = RestoreResult(tuple(restored), sum(v == "identical" for v in verdicts.values()), kept, tuple(problems))
    log.info("restore_done", src=str(src), restored=len(restored), identical=result.identical, kept_newer=len(kept), problems=len(problems))
    return result
