"""Restoring the original Conjuring's home backups: `home_backup/<user>/...` (its rsync mirror)
and `home_backup/home.tar` (its tar, made with `tar -cp` and grown with `tar -up`).

Neither carries checksums or anything this box can trust. The same rules as for this box's
own backups apply: every entry gets the owner of its home on this box (or the box's UID for
that student), never what the backup says; no setuid, setgid or sticky bit; nothing is
written through a symlink; device nodes, FIFOs and sockets are refused. In a tar, a path
with `..` or a leading `/` is refused, a hard link becomes a copy of the archive's own
earlier member (or is refused), and a later copy of a path replaces an earlier one, as tar
itself does when extracting an archive grown with `-u`. In a mirror, a file with other hard
links that does not belong to its home's owner is refused: its other names may be anywhere.
"""

from __future__ import annotations

import os
import stat
import tarfile
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Iterator, Mapping

import structlog

from conjuringd.backup import MANIFEST, RestoreResult, _install, _owner, check_space, open_tar, restore_homes, scan_homes
from conjuringd.backup_manifest import BackupError, Entry, check_rel
from conjuringd.config.problems import ConjuringError
from conjuringd.sticks.safewrite import open_below, open_dir, set_dir_meta

log = structlog.get_logger(__name__)

LEGACY_TAR = "home.tar"
MAX_MEMBERS = 300_000  # a tar listing more is refused past that point (memory)
HOME_MODE = 0o750  # as this box makes homes (group: the student's own); the original's 0755 let anyone in
MAX_MTIME_NS = 2**62


@dataclass(frozen=True)
class Item:
    entry: Entry
    member: tarfile.TarInfo | None = None  # tar: the member holding the data


def backup_format(src: Path) -> str:
    """"manifest" (this box's own backups), "tar" (the original's home.tar) or "tree" (its rsync mirror)."""
    if os.path.lexists(src / MANIFEST):
        return "manifest"
    if os.path.lexists(src / LEGACY_TAR):
        return "tar"
    return "tree"


def restore_any(src: Path, home_dir: Path, *, force: bool = False, owners: Mapping[str, int] | None = None) -> RestoreResult:
    """Restore whichever kind of backup `src` is (see backup_format)."""
    if problem := _not_a_backup(src):
        raise BackupError(problem)
    kind = backup_format(src)
    if kind == "manifest":
        return restore_homes(src, home_dir, force=force, owners=owners)
    if kind == "tar":
        return restore_tar(src / LEGACY_TAR, home_dir, force=force, owners=owners)
    return restore_tree(src, home_dir, force=force, owners=owners)


def _not_a_backup(src: Path) -> str:
    """Why `src` is the wrong folder to restore from (a stick's conjuring/ or custom/), or ""."""
    for inner in ("home_backup", "custom/home_backup"):
        if (src / inner).is_dir():
            return f"{src} is not a backup but holds one: give {src / inner}"
    if (src / "users.csv").is_file():
        return f"{src} is a configuration folder, not a backup"
    return ""


# --- reading the sources ---------------------------------------------------------


def tree_items(src: Path) -> tuple[list[Item], list[str]]:
    """Every home folder below `src` (the original's home_backup/ or custom/home/) as items."""
    try:
        entries, skipped = scan_homes(src)
    except OSError as exc:
        raise BackupError(f"{src}: cannot be read: {exc.strerror or exc}") from exc
    problems = [f"{rel}: not a file, folder or symlink (device, FIFO or socket): refused" for rel in skipped]
    return [Item(e) for e in entries.values()], problems


def member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _member_entry(member: tarfile.TarInfo, name: str, latest: dict[str, Item]) -> Item | str:
    """The item a tar member stands for, or why it is refused."""
    mtime_ns = max(0, min(int(member.mtime * 1_000_000_000), MAX_MTIME_NS))
    meta = dict(mode=member.mode & 0o7777, uid=0, gid=0, mtime_ns=mtime_ns)
    if member.issparse():
        return "a sparse member (never made by Conjuring): refused"
    if member.isreg():
        return Item(Entry(name, "file", size=member.size, **meta), member)
    if member.isdir():
        return Item(Entry(name, "dir", **meta))
    if member.issym():
        return Item(Entry(name, "symlink", target=member.linkname, **meta)) if member.linkname else "a symlink to nothing: refused"
    if member.islnk():
        target = member_name(member.linkname)
        earlier = latest.get(target)
        if check_rel(target) or earlier is None or earlier.entry.kind != "file":
            return f"a hard link to {member.linkname!r}, not a file earlier in the archive: refused"
        if PurePosixPath(target).parts[0] != PurePosixPath(name).parts[0]:
            return f"a hard link into another home ({member.linkname!r}): refused"
        return Item(replace(earlier.entry, path=name, mode=meta["mode"], mtime_ns=meta["mtime_ns"]), earlier.member)
    return "a device node, FIFO or other special file: refused"


def tar_items(tar: tarfile.TarFile) -> tuple[list[Item], list[str]]:
    """The archive's entries, the last copy of each path winning; problems for the refused ones."""
    latest: dict[str, Item] = {}
    problems: list[str] = []
    count = 0
    try:
        for member in tar:
            count += 1
            if count > MAX_MEMBERS:
                problems.append(f"more than {MAX_MEMBERS} members: the rest is refused")
                break
            name = member_name(member.name)
            if name in ("", "."):
                continue
            if problem := check_rel(name):
                problems.append(f"{member.name!r}: {problem} (.. or absolute): refused")
                continue
            item = _member_entry(member, name, latest)
            if isinstance(item, str):
                problems.append(f"{name}: {item}")
                latest.pop(name, None)  # a refused later copy does not bring back the earlier one
            else:
                latest[name] = item
    except (tarfile.TarError, ValueError, EOFError, OSError) as exc:
        problems.append(f"damaged after {count} members ({exc}): the rest is refused")
    return list(latest.values()), problems


# --- restoring -------------------------------------------------------------------


def restore_tar(path: Path, home_dir: Path, *, force: bool = False, owners: Mapping[str, int] | None = None) -> RestoreResult:
    raw, tar = open_tar(path, "(uncompressed) tar archive")
    with raw, tar:
        items, problems = tar_items(tar)

        def reader(item: Item):
            return tar.extractfile(item.member)

        return _restore(items, problems, home_dir, reader, force, owners or {}, str(path))


def restore_tree(src: Path, home_dir: Path, *, force: bool = False, owners: Mapping[str, int] | None = None,
                 source_owners: Mapping[str, int] | None = None, only: set[str] | None = None) -> RestoreResult:
    """Restore a mirror of homes (`only` those homes, if given). `source_owners`: the UID each home
    had where it comes from (default: the owner of the home folder in `src`), for the hard-link rule."""
    if not src.is_dir():
        raise BackupError(f"{src}: not a folder")
    items, problems = tree_items(src)
    if only is not None:
        items = [i for i in items if PurePosixPath(i.entry.path).parts[0] in only]
        problems = [p for p in problems if p.split("/", 1)[0] in only]
    if not any(i.entry.kind == "dir" and "/" not in i.entry.path for i in items):
        raise BackupError(f"{src}: not a home backup (no {MANIFEST}, no {LEGACY_TAR}, no home folders)")
    homes = dict(source_owners or {})

    def reader(item: Item):
        home = PurePosixPath(item.entry.path).parts[0]
        if home not in homes:
            homes[home] = os.lstat(src / home).st_uid
        handle = open_below(src, item.entry.path)
        st = os.fstat(handle.fileno())
        if st.st_nlink > 1 and st.st_uid != homes[home]:
            handle.close()
            raise BackupError(f"has {st.st_nlink} hard links and belongs to UID {st.st_uid}, not to its home's owner: refused")
        return handle

    return _restore(items, problems, home_dir, reader, force, owners or {}, str(src))


def _owned(items: list[Item], home_dir: Path, owners: Mapping[str, int], problems: list[str]) -> list[Item]:
    """Items with the owner of their home on this box and no special bits; the rest reported."""
    resolved: dict[str, tuple[int, int] | str] = {}
    homeless: dict[str, int] = {}
    kept = []
    for item in items:
        parts = PurePosixPath(item.entry.path).parts
        if len(parts) == 1 and item.entry.kind != "dir":
            problems.append(f"{item.entry.path}: not a home folder: skipped")
            continue
        owner = resolved.setdefault(parts[0], _owner(home_dir, parts[0], owners))
        if isinstance(owner, str):
            homeless[parts[0]] = homeless.get(parts[0], 0) + 1
            continue
        mode = HOME_MODE if len(parts) == 1 else item.entry.mode & 0o777
        kept.append(replace(item, entry=replace(item.entry, uid=owner[0], gid=owner[1], mode=mode)))
    problems += [f"{home}/ ({count} entries): {resolved[home]}: skipped" for home, count in sorted(homeless.items())]
    return _with_parents(kept)


def _with_parents(items: list[Item]) -> list[Item]:
    """`items` plus a folder entry for each parent a tar does not list (else it would stay root's, 0700)."""
    listed = {i.entry.path for i in items}
    now = time.time_ns()
    missing: dict[str, Item] = {}
    for item in items:
        parents = PurePosixPath(item.entry.path).parents
        for parent in (p.as_posix() for p in parents if p.as_posix() != "."):
            if parent not in listed and parent not in missing:
                mode = HOME_MODE if "/" not in parent else 0o755
                missing[parent] = Item(Entry(parent, "dir", mode, item.entry.uid, item.entry.gid, now))
    return [*items, *missing.values()]


def _verdict(home_dir: Path, entry: Entry, force: bool) -> str:
    """"write", "identical" or "newer"; with no checksum, identical means same size and mtime (second)."""
    try:
        st = os.lstat(home_dir / entry.path)
    except (FileNotFoundError, NotADirectoryError):
        return "write"
    if entry.kind == "symlink" and stat.S_ISLNK(st.st_mode) and os.readlink(home_dir / entry.path) == entry.target:
        return "identical"
    same_second = st.st_mtime_ns // 10**9 == entry.mtime_ns // 10**9
    if entry.kind == "file" and stat.S_ISREG(st.st_mode) and st.st_size == entry.size and same_second:
        return "identical"
    if st.st_mtime_ns > entry.mtime_ns and not force:
        return "newer"
    return "write"


def _make_dirs(home_dir: Path, dirs: list[Entry], problems: list[str]) -> list[Entry]:
    made = []
    for entry in sorted(dirs, key=lambda e: e.path):
        try:
            os.close(open_dir(home_dir, PurePosixPath(entry.path).parts))
            made.append(entry)
        except OSError as exc:
            problems.append(f"{entry.path}/: {exc.strerror} (a file or symlink is in the way)")
    return made


def _write(home_dir: Path, item: Item, reader) -> None:
    if item.entry.kind == "symlink":
        _install(home_dir, item.entry, None)
        return
    with reader(item) as handle:
        _install(home_dir, item.entry, handle)


def _restore(items: list[Item], problems: list[str], home_dir: Path, reader, force: bool,
             owners: Mapping[str, int], label: str) -> RestoreResult:
    home_dir.mkdir(parents=True, exist_ok=True)
    items = _owned(items, home_dir, owners, problems)
    dirs = _make_dirs(home_dir, [i.entry for i in items if i.entry.kind == "dir"], problems)
    verdicts = {i.entry.path: _verdict(home_dir, i.entry, force) for i in items if i.entry.kind != "dir"}
    wanted = [i for i in items if verdicts.get(i.entry.path) == "write"]
    check_space(home_dir, sum(i.entry.size for i in wanted) + 4096 * len(wanted), fat=False)
    restored = []
    for item in sorted(wanted, key=lambda i: (i.member.offset_data if i.member else 0, i.entry.path)):
        try:
            _write(home_dir, item, reader)
            restored.append(item.entry.path)
        except (OSError, ConjuringError, tarfile.TarError) as exc:
            problems.append(f"{item.entry.path}: {exc}")
    set_dir_meta(home_dir, dirs)
    kept = tuple(rel for rel, v in sorted(verdicts.items()) if v == "newer")
    result = RestoreResult(tuple(sorted(restored)), sum(v == "identical" for v in verdicts.values()), kept, tuple(problems))
    log.info("restore_done", src=label, restored=len(restored), identical=result.identical, kept_newer=len(kept),
             problems=len(problems))
    return result


def iter_homes(items: list[Item]) -> Iterator[str]:
    """The home names in `items` (top-level folders), sorted."""
    yield from sorted({PurePosixPath(i.entry.path).parts[0] for i in items if i.entry.kind == "dir" and "/" not in i.entry.path})
