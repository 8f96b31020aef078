"""Copy a configuration folder off a stick without trusting it.

Every directory is opened relative to its parent's descriptor with
O_NOFOLLOW, every file with O_NOFOLLOW and checked again after opening, so a
symlink (or a directory swapped for one) never leads out of the tree. Hard
links whose other names are outside the tree, device files, FIFOs, sockets and
other mounted filesystems are refused and listed, and so is a file over the
per-file limit or a folder nested too deep. The tree is scanned (iteratively,
counting every entry) before anything is copied, so a tree whose copy would be
over the limits is refused as a whole, with every refused entry listed.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from conjuringd.config.problems import ConjuringError
from conjuringd.sticks.layout import canonical_name

CHUNK = 1 << 20
_ZERO = bytes(CHUNK)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = {
    stat.S_IFIFO: "named pipe (FIFO)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


@dataclass(frozen=True)
class CopyLimits:
    max_files: int = 20000
    max_bytes: int = 2 * 1024**3
    exclude: frozenset[str] = frozenset()  # top-level names left out (compared case-insensitively)
    fold_case: bool = False  # FAT & co: give known configuration names their canonical case
    max_file_bytes: int = 1024**3  # one file larger than this is skipped (and named), not the whole tree
    max_depth: int = 64  # folders nested deeper are skipped (and named)


@dataclass(frozen=True)
class Refusal:
    path: str  # relative to the copied folder, printable
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class TreeTooLarge(ConjuringError):
    """What would be copied is over the limits; nothing was copied. `refusals`: every entry
    skipped up to then (all of them when it is the total size that is over)."""

    def __init__(self, message: str, refusals: tuple[Refusal, ...] = ()):
        super().__init__(message)
        self.refusals = refusals


@dataclass
class _Entry:
    rel: tuple[str, ...]  # names on the source, as the OS gives them
    out: tuple[str, ...]  # names in the copy (valid UTF-8)
    st: os.stat_result


@dataclass
class _Scan:
    limits: CopyLimits
    root_dev: int
    files: list[_Entry] = field(default_factory=list)
    dirs: list[_Entry] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


# What other systems leave on a stick (macOS AppleDouble files, Windows thumbnails):
# never configuration, skipped without a word.
JUNK = frozenset({".ds_store", ".trashes", ".spotlight-v100", ".fseventsd", ".temporaryitems", "thumbs.db",
                  "desktop.ini", "system volume information", "$recycle.bin"})


def is_junk(name: str) -> bool:
    return name.startswith("._") or name.lower() in JUNK


def printable(parts: tuple[str, ...]) -> str:
    """A relative path for messages, even when a name is not UTF-8."""
    return "/".join(os.fsencode(p).decode("utf-8", "backslashreplace") for p in parts)


def utf8_name(name: str) -> str | None:
    """`name` if it is valid UTF-8, else its bytes read as Latin-1 (None if that fails)."""
    raw = os.fsencode(name)
    try:
        raw.decode("utf-8")
        return name
    except UnicodeDecodeError:
        fixed = raw.decode("cp1252", "replace").replace("\ufffd", "_")
        return fixed if "/" not in fixed and fixed not in (".", "..") else None


@dataclass
class _Level:
    fd: int
    entries: Iterator[_Entry]
    owned: bool  # opened by the walk, closed when the folder is done


def _entries(dir_fd: int, rel: tuple[str, ...], out: tuple[str, ...], ctx: "_WalkContext") -> Iterator[_Entry]:
    """The entries of one folder, sorted, without junk, with names fit for the copy."""
    names = sorted(os.listdir(dir_fd))
    if len(names) > ctx.max_entries:
        raise TreeTooLarge(f"{printable(rel) or 'the folder'} holds {len(names)} entries, "
                           f"more than the limit of {ctx.max_entries} ([usb] max_files)", tuple(ctx.notes or ()))
    taken: set[str] = set()
    for name in names:
        if (not rel and name.lower() in ctx.exclude) or is_junk(name):
            continue
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        out_name = utf8_name(name)
        if out_name is not None and ctx.fold_case:
            out_name = canonical_name(out, out_name)
        if out_name is None or out_name in taken or (out_name != name and out_name in names):
            if ctx.notes is not None:
                why = "is not UTF-8 and cannot be renamed" if out_name is None else f"clashes with another file as {out_name!r}"
                ctx.notes.append(Refusal(printable(rel + (name,)), f"file name {why}: skipped"))
            continue
        taken.add(out_name)
        if out_name != name and ctx.notes is not None and utf8_name(name) != name:
            ctx.notes.append(Refusal(printable(rel + (name,)), f"file name is not UTF-8: copied as {out_name!r}"))
        yield _Entry(rel + (name,), out + (out_name,), st)


@dataclass(frozen=True)
class _WalkContext:
    exclude: frozenset[str]
    descend: Callable[[_Entry], bool]
    notes: list[Refusal] | None
    fold_case: bool
    max_entries: int


def _open_sub(dir_fd: int, entry: _Entry) -> int:
    sub = os.open(entry.rel[-1], _DIR_FLAGS, dir_fd=dir_fd)
    opened = os.fstat(sub)
    if (opened.st_dev, opened.st_ino) != (entry.st.st_dev, entry.st.st_ino):
        os.close(sub)
        raise OSError(errno.ESTALE, "directory changed while copying", printable(entry.rel))
    return sub


def _walk(root_fd: int, ctx: _WalkContext) -> Iterator[tuple[int, _Entry]]:
    """Yield (parent fd, entry) for every entry below `root_fd`, folders before their contents.

    Iterative (an explicit stack of open folders), so a deep tree cannot exhaust Python's
    recursion limit; how deep it goes is up to `ctx.descend`."""
    stack = [_Level(root_fd, _entries(root_fd, (), (), ctx), owned=False)]
    try:
        while stack:
            level = stack[-1]
            entry = next(level.entries, None)
            if entry is None:
                stack.pop()
                if level.owned:
                    os.close(level.fd)
                continue
            yield level.fd, entry
            if stat.S_ISDIR(entry.st.st_mode) and ctx.descend(entry):
                sub = _open_sub(level.fd, entry)
                stack.append(_Level(sub, _entries(sub, entry.rel, entry.out, ctx), owned=True))
    finally:
        for level in stack:
            if level.owned:
                os.close(level.fd)


def file_size(st: os.stat_result) -> int:
    """What a file costs: its apparent size or the space it takes, whichever is larger
    (a sparse file is as big as it says; a file may also take more blocks than its length)."""
    return max(st.st_size, st.st_blocks * 512)


def _classify(scan: _Scan, entry: _Entry, dir_fd: int) -> None:
    mode, where, limits = entry.st.st_mode, printable(entry.rel), scan.limits
    if stat.S_ISLNK(mode):
        target = os.readlink(entry.rel[-1], dir_fd=dir_fd)
        scan.refusals.append(Refusal(where, f"symbolic link to {target!r} not followed: skipped"))
    elif stat.S_ISDIR(mode):
        if entry.st.st_dev != scan.root_dev:
            scan.refusals.append(Refusal(where, "another filesystem is mounted here: skipped"))
        elif len(entry.rel) > limits.max_depth:
            scan.refusals.append(Refusal(where, f"folder nested more than {limits.max_depth} levels deep: skipped with everything in it"))
        else:
            scan.dirs.append(entry)
    elif stat.S_ISREG(mode):
        size, most = file_size(entry.st), min(limits.max_file_bytes, limits.max_bytes)
        if size > most:
            scan.refusals.append(Refusal(where, f"{_sizes(entry.st)}, more than the limit for one file of {most} bytes ([usb] max_file_bytes): skipped"))
        else:
            scan.files.append(entry)
    else:
        kind = _KINDS.get(stat.S_IFMT(mode), "special file")
        scan.refusals.append(Refusal(where, f"{kind} skipped"))


def _sizes(st: os.stat_result) -> str:
    allocated = st.st_blocks * 512
    if allocated > st.st_size:
        return f"{allocated} bytes on disk ({st.st_size} bytes long)"
    return f"{st.st_size} bytes" + (f" ({allocated} bytes on disk: a sparse file)" if allocated < st.st_size else "")


def _drop_outside_links(scan: _Scan) -> None:
    """Refuse files that have hard links outside the copied tree."""
    seen: dict[tuple[int, int], int] = {}
    for entry in scan.files:
        key = (entry.st.st_dev, entry.st.st_ino)
        seen[key] = seen.get(key, 0) + 1
    kept = []
    for entry in scan.files:
        if seen[(entry.st.st_dev, entry.st.st_ino)] < entry.st.st_nlink:
            scan.refusals.append(Refusal(printable(entry.rel), "hard link to a file outside the folder: skipped"))
        else:
            kept.append(entry)
    scan.files = kept


def scan_tree(src_fd: int, limits: CopyLimits) -> _Scan:
    """Every entry below `src_fd`, classified; raises TreeTooLarge when over the limits.

    `max_files` counts every entry (folders, links, special files too), and the walk stops
    as soon as it is reached; `max_bytes` is checked on what would be copied."""
    scan = _Scan(limits, os.fstat(src_fd).st_dev)
    ctx = _WalkContext(frozenset(n.lower() for n in limits.exclude),
                       lambda entry: bool(scan.dirs) and scan.dirs[-1] is entry,  # folders _classify accepted
                       scan.refusals, limits.fold_case, limits.max_files)
    seen = 0
    for dir_fd, entry in _walk(src_fd, ctx):
        seen += 1
        if seen > limits.max_files:
            raise TreeTooLarge(f"more than {limits.max_files} entries (files, folders and links), "
                               f"the limit ([usb] max_files)", tuple(scan.refusals))
        _classify(scan, entry, dir_fd)
    _drop_outside_links(scan)
    total = sum(file_size(e.st) for e in scan.files)
    if total > limits.max_bytes:
        raise TreeTooLarge(f"{total} bytes would be imported, more than the limit of {limits.max_bytes} "
                           f"([usb] max_bytes)", tuple(scan.refusals))
    return scan


def _copy_data(src: int, dst: int, size: int) -> None:
    """Copy `size` bytes; holes (and runs of zeros) stay holes in the copy."""
    offset = 0
    while offset < size:
        try:
            data_at = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # only a hole is left
            data_at = offset  # no SEEK_DATA support: read everything
        if data_at != offset:
            offset = data_at
        chunk = os.pread(src, min(CHUNK, size - offset), offset)
        if not chunk:
            raise OSError(errno.EIO, "file shrank while copying")
        if chunk != _ZERO[: len(chunk)]:
            os.pwrite(dst, chunk, offset)
        offset += len(chunk)
    os.ftruncate(dst, size)


def _copy_file(dir_fd: int, entry: _Entry, dst: Path) -> None:
    fd = os.open(entry.rel[-1], _FILE_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino, st.st_size) != (entry.st.st_dev, entry.st.st_ino, entry.st.st_size):
            raise OSError(errno.ESTALE, "file changed while copying", printable(entry.rel))
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _copy_data(fd, out, st.st_size)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def safe_copy(src: Path, dst: Path, limits: CopyLimits, *, on_file: Callable[[int], None] | None = None) -> list[Refusal]:
    """Copy the tree `src` into the new folder `dst`; return what was refused.

    Raises TreeTooLarge (nothing copied) or OSError (e.g. the stick was pulled:
    `dst` is left for the caller to remove). `on_file(n)` runs after each copied file.
    """
    src_fd = os.open(src, _DIR_FLAGS)
    try:
        scan = scan_tree(src_fd, limits)
        wanted_dirs = {e.rel for e in scan.dirs}
        wanted_files = {e.rel: e for e in scan.files}
        os.makedirs(dst, mode=0o755)
        copied = 0
        ctx = _WalkContext(frozenset(n.lower() for n in limits.exclude), lambda entry: entry.rel in wanted_dirs,
                           None, limits.fold_case, limits.max_files)
        walk = _walk(src_fd, ctx)
        for dir_fd, entry in walk:
            target = dst.joinpath(*entry.out)
            if entry.rel in wanted_dirs:
                os.mkdir(target, 0o755)
            elif entry.rel in wanted_files:
                _copy_file(dir_fd, wanted_files[entry.rel], target)
                copied += 1
                if on_file:
                    on_file(copied)
        return scan.refusals
    finally:
        os.close(src_fd)
