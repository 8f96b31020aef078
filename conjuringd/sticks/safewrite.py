"""Reading and writing files below a root folder (a stick, the homes) as root, safely.

Every folder is opened with O_NOFOLLOW relative to its parent; every file is
opened with O_NOFOLLOW|O_NONBLOCK (a FIFO planted under a name we open cannot
block us) and checked with fstat to be a regular file before a byte is read.
Files are written to an exclusive temp name with a random part (O_EXCL: nothing
planted under that name is ever opened), fsynced, given their owner/mode/mtime
and renamed into place.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
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


KINDS = {
    stat.S_IFDIR: "folder",
    stat.S_IFLNK: "symbolic link",
    stat.S_IFIFO: "named pipe (FIFO)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def kind_of(mode: int) -> str:
    return KINDS.get(stat.S_IFMT(mode), "special file")


def open_regular(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> int:
    """A read descriptor of a regular file: no symlink, no blocking open, nothing else accepted.
    OSError(ELOOP) for a symlink, OSError(EINVAL) naming what it is for anything else."""
    try:
        fd = os.open(path, _READ, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{os.fsdecode(path)} is a symbolic link: not followed") from exc
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{os.fsdecode(path)} is a {kind_of(mode)}, not a regular file")
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """The content of a regular file, refused (OSError EFBIG) when longer than `limit` bytes."""
    with os.fdopen(open_regular(path), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"{path.name} is larger than {limit} bytes")
    return data


def temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(6)}.conjuring-tmp"


def create_temp(dir_fd: int, name: str, mode: int = 0o600) -> tuple[int, str]:
    """A new, exclusive temp file beside `name` in `dir_fd`: (descriptor, temp name)."""
    for _ in range(10):
        tmp = temp_name(name)
        try:
            return os.open(tmp, _CREATE, mode, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue  # someone planted exactly this name: draw another
    raise OSError(errno.EEXIST, f"no free temp name beside {name}")


def open_dir(root: Path, parts: tuple[str, ...], *, create: bool = True, mode: int = 0o700) -> int:
    """A descriptor of root/parts..., creating folders (`mode`, 0700 unless told) but never following a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
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


def install_file(dir_fd: int, name: str, entry: Meta, reader, *, size: int | None = None) -> str:
    """Write `reader`'s bytes as `name` in `dir_fd` with entry's owner/mode/mtime; return the sha256.
    With `size`, exactly that many bytes must come (more are never read)."""
    h = hashlib.sha256()
    fd, tmp = create_temp(dir_fd, name)
    try:
        written = 0
        limit = -1 if size is None else size + 1
        while chunk := reader.read(CHUNK if limit < 0 else min(CHUNK, limit - written)):
            h.update(chunk)
            _write_all(fd, chunk)
            written += len(chunk)
        if size is not None and written != size:
            raise ChecksumMismatch(f"the backup copy has {'more' if written > size else 'fewer'} than "
                                   f"the {size} bytes recorded, it is damaged")
        os.fsync(fd)
        if entry.sha256 and h.hexdigest() != entry.sha256:
            raise ChecksumMismatch("checksum mismatch, the backup copy is damaged")
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
    tmp = temp_name(name)
    os.symlink(entry.target, tmp, dir_fd=dir_fd)  # fails on anything planted under that name
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
        fd = open_regular(parts[-1], dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return os.fdopen(fd, "rb")
