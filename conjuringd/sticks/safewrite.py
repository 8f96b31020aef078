"""Writing files below a root folder as root without ever following a symlink.

Every folder is opened with O_NOFOLLOW relative to its parent, files are written
to a temp name, fsynced, given their owner/mode/mtime and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Protocol

from conjuringd.config.problems import ConjuringError

CHUNK = 1 << 20


class ChecksumMismatch(ConjuringError):
    """Data read back does not match its recorded SHA-256."""


class Meta(Protocol):
    path: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    sha256: str
    target: str


def nofollow(path: str, flags: int) -> int:
    """An `opener` for open() that refuses a symlink as the last component."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def open_dir(root: Path, parts: tuple[str, ...], *, create: bool = True) -> int:
    """A descriptor of root/parts..., creating folders (0700) but never following a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = sub
        return fd
    except BaseException:
        os.close(fd)
        raise


class HashingReader:
    def __init__(self, raw, h):
        self.raw, self.h = raw, h

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.h.update(data)
        return data


def install_file(dir_fd: int, name: str, entry: Meta, reader) -> str:
    """Write `reader`'s bytes as `name` in `dir_fd` with entry's owner/mode/mtime; return the sha256."""
    tmp = f".{name}.conjuring-tmp"
    h = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        while chunk := reader.read(CHUNK):
            h.update(chunk)
            _write_all(fd, chunk)
        os.fsync(fd)
        if entry.sha256 and h.hexdigest() != entry.sha256:
            raise ChecksumMismatch(f"{entry.path}: checksum mismatch, the backup copy is damaged")
        _set_meta(fd, entry)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return h.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _set_meta(fd: int, entry: Meta) -> None:
    try:
        os.fchown(fd, entry.uid, entry.gid)
    except PermissionError:
        pass  # not root: keep our own owner
    os.fchmod(fd, entry.mode)
    os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))


def install_symlink(dir_fd: int, name: str, entry: Meta) -> None:
    tmp = f".{name}.conjuring-tmp"
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    os.symlink(entry.target, tmp, dir_fd=dir_fd)
    try:
        os.chown(tmp, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
    except PermissionError:
        pass
    os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def set_dir_meta(root: Path, entries: list[Meta], under: tuple[str, ...] = ()) -> None:
    """Owner, mode and mtime of folders root/under/<path>, deepest first (writing inside changes
    a folder's mtime); `under` is opened without following symlinks, like the paths."""
    for entry in sorted(entries, key=lambda e: e.path.count("/"), reverse=True):
        fd = open_dir(root, (*under, *PurePosixPath(entry.path).parts))
        try:
            _set_meta(fd, entry)
        finally:
            os.close(fd)


def open_below(root: Path, rel: str):
    """Open root/rel for reading with no symlink at any level (a binary file object)."""
    parts = PurePosixPath(rel).parts
    dir_fd = open_dir(root, parts[:-1], create=False)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return os.fdopen(fd, "rb")
