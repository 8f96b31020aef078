"""Reading a configuration folder safely: size limits, no symlinks, UTF-8 with line numbers.

Nothing here raises for bad content: every finding is a `Problem`. Only an
unreadable or missing root folder raises `ConfigError` (in `load`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from conjuringd.config.model import FileTree
from conjuringd.config.problems import Problem, error, warning

KIB = 1024
MIB = 1024 * KIB

BOM = b"\xef\xbb\xbf"
# Never follow a link, never block on a FIFO. Windows has none of these flags (conjuringctl validate on a
# teacher's laptop): there a link is caught by the islink() check before opening (racy, but harmless for
# a check on one's own stick; the daemon runs on Linux with the flags).
READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
              | getattr(os, "O_BINARY", 0))


@dataclass
class Reader:
    """Reads files below `root`, naming them `<prefix>/<relative path>` in problems."""

    root: Path
    prefix: str = "custom"
    problems: list[Problem] = field(default_factory=list)

    def name(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if rel else self.prefix

    def read(self, rel: str, limit: int) -> bytes | None:
        """The bytes of regular file `rel`, or None (with a problem) if it cannot be used."""
        data, problem = read_regular(self.root / rel, self.name(rel), limit)
        if problem is not None:
            self.problems.append(problem)
        return data


def read_regular(path: Path, name: str, limit: int) -> tuple[bytes | None, Problem | None]:
    """Read a regular file without following a symlink, refusing more than `limit` bytes."""
    try:
        if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):
            raise OSError(errno.ELOOP, "a symbolic link")
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        if os.path.islink(path):
            return None, warning(name, 0, "is a symbolic link: skipped (links are never followed)")
        return None, error(name, 0, f"cannot be read: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, warning(name, 0, "is not a regular file: skipped")
        if st.st_size > limit:
            return None, error(name, 0, f"is too large ({_size(st.st_size)}; the limit is {_size(limit)})")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            return None, error(name, 0, f"is too large (more than {_size(limit)})")
        return data, None
    except OSError as exc:
        return None, error(name, 0, f"cannot be read: {exc.strerror or exc}")
    finally:
        os.close(fd)


def _size(n: int) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= KIB:
        return f"{n / KIB:.0f} KiB"
    return f"{n} bytes"


def decode_utf8(data: bytes, name: str) -> tuple[str | None, Problem | None]:
    """Decode UTF-8 (a leading BOM is dropped); on failure say which line and byte offset."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, utf8_problem(data, exc.start, name)


def utf8_problem(data: bytes, offset: int, name: str, line_offset: int = 0) -> Problem:
    line = data.count(b"\n", 0, offset) + 1 + line_offset
    column = offset - (data.rfind(b"\n", 0, offset) + 1)
    return error(
        name,
        line,
        f"is not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} "
        f"(column {column + 1}); save the file as UTF-8",
    )


def decode_lines(data: bytes, name: str) -> tuple[list[str], list[Problem]]:
    """Decode line by line; an undecodable line becomes "" (numbering kept) plus a problem."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    lines, problems, offset = [], [], 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            lines.append("")
            problems.append(
                error(
                    name,
                    number,
                    f"is not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset "
                    f"{offset + exc.start} (column {exc.start + 1}); save the file as UTF-8",
                )
            )
        offset += len(raw) + 1
    return lines, problems


@dataclass
class TreeScan:
    """Accumulates the files of a tree, within limits shared by several trees."""

    max_files: int
    max_bytes: int
    count: int = 0
    total: int = 0
    problems: list[Problem] = field(default_factory=list)
    over_limit: bool = False


def read_tree(root: Path, name: str, scan: TreeScan) -> FileTree:
    """Every regular file below `root`: relative POSIX path -> sha256. Links are skipped."""
    files: list[tuple[str, str]] = []
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return FileTree()
    except OSError as exc:
        scan.problems.append(error(name, 0, f"cannot be read: {exc.strerror or exc}"))
        return FileTree()
    if stat.S_ISLNK(st.st_mode):
        scan.problems.append(warning(name, 0, "is a symbolic link: skipped (links are never followed)"))
        return FileTree()
    if not stat.S_ISDIR(st.st_mode):
        scan.problems.append(error(name, 0, "should be a folder"))
        return FileTree()
    _walk(root, "", name, scan, files)
    return FileTree(tuple(sorted(files)))


def _walk(folder: Path, rel: str, name: str, scan: TreeScan, files: list[tuple[str, str]]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        scan.problems.append(error(_join(name, rel), 0, f"cannot be listed: {exc.strerror or exc}"))
        return
    for entry in entries:
        if scan.over_limit:
            return
        child = f"{rel}/{entry.name}" if rel else entry.name
        shown = _join(name, child)
        if not _utf8_name(entry.name):
            scan.problems.append(error(name, 0, f"file name {entry.name!r} is not valid UTF-8: rename it"))
            continue
        if entry.is_symlink():
            scan.problems.append(warning(shown, 0, "is a symbolic link: skipped (links are never followed)"))
        elif entry.is_dir(follow_symlinks=False):
            _walk(Path(entry.path), child, name, scan, files)
        elif entry.is_file(follow_symlinks=False):
            _add_file(Path(entry.path), child, shown, scan, files)
        else:
            scan.problems.append(warning(shown, 0, "is not a regular file: skipped"))


def _add_file(path: Path, child: str, shown: str, scan: TreeScan, files: list[tuple[str, str]]) -> None:
    scan.count += 1
    if scan.count > scan.max_files:
        scan.problems.append(
            error(shown, 0, f"too many files in shared/ and home_default/ (the limit is {scan.max_files}, [usb] max_files)")
        )
        scan.over_limit = True
        return
    sha = hashlib.sha256()
    try:
        fd = os.open(path, READ_FLAGS)
        with os.fdopen(fd, "rb") as handle:
            for chunk in iter(lambda: handle.read(MIB), b""):
                scan.total += len(chunk)
                if scan.total > scan.max_bytes:
                    scan.problems.append(
                        error(shown, 0, f"shared/ and home_default/ are too large (the limit is {_size(scan.max_bytes)}, [usb] max_bytes)")
                    )
                    scan.over_limit = True
                    return
                sha.update(chunk)
    except OSError as exc:
        scan.problems.append(error(shown, 0, f"cannot be read: {exc.strerror or exc}"))
        return
    files.append((child, sha.hexdigest()))


def _join(name: str, rel: str) -> str:
    return f"{name}/{rel}" if rel else name


def _utf8_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_dir(root: Path) -> list[os.DirEntry[str]]:
    """The entries of `root`, sorted by name."""
    return sorted(os.scandir(root), key=lambda e: e.name)
