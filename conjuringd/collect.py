"""Collect one folder (`~/<folder>/`) from every student's home into a destination folder.

Homes are read the way a stick's configuration is (sticks/copy.py `scan_tree`): every folder opened
with O_NOFOLLOW relative to its parent, symlinks, special files, outside hard links and other mounts
refused and named; files are then opened with `safewrite.open_below` (no link at any level) and checked
to be the file that was scanned. Nothing in a home is ever written. The destination gets
`<student>/<path>` with FAT-safe names and `MANIFEST.csv` (student, file, size, mtime, sha256, and
`stored_as` where a name had to change). A file already at the destination with the size and SHA-256
the previous manifest records is not written again.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from conjuringd.config.problems import ConjuringError
from conjuringd.fatnames import FatTree
from conjuringd.sticks.copy import CopyLimits, TreeTooLarge, printable, scan_tree
from conjuringd.sticks.report import write_atomic
from conjuringd.sticks.safewrite import create_temp, open_below, open_dir, read_regular

log = structlog.get_logger(__name__)

MANIFEST_CSV = "MANIFEST.csv"
COLUMNS = ("student", "file", "size", "mtime", "sha256", "stored_as", "mtime_ns")
MAX_MANIFEST = 64 * 1024**2
CHUNK = 1 << 20
_SHA = re.compile(r"[0-9a-f]{64}")
HOME_ERRORS = frozenset({errno.ESTALE, errno.ELOOP, errno.EINVAL, errno.EACCES, errno.ENOTDIR, errno.ENOENT})
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class CoursefolderError(ConjuringError):
    """A folder name that cannot be collected or distributed."""


def check_folder_name(name: str) -> str:
    """`name` if it is one plain folder name (no path, not hidden), else CoursefolderError."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith(".") or "\x00" in name:
        raise CoursefolderError(f"{name!r} is not a folder name (one name, no '/', not starting with '.')")
    return name


@dataclass(frozen=True)
class Row:
    student: str
    file: str  # path inside ~/<folder>/, as the home has it (printable)
    size: int
    mtime_ns: int
    sha256: str
    stored_as: str = ""  # path below the destination when not <student>/<file>

    def stored(self) -> str:
        return self.stored_as or f"{self.student}/{self.file}"

    def csv_fields(self) -> list[str]:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.mtime_ns // 10**9))
        return [self.student, self.file, str(self.size), f"{when}Z", self.sha256, self.stored_as, str(self.mtime_ns)]


@dataclass(frozen=True)
class StudentCollect:
    student: str
    state: str  # "collected" | "nothing" | "over-limit" | "refused" | "not-written"
    message: str = ""
    written: int = 0
    unchanged: int = 0
    bytes_written: int = 0
    notes: tuple[str, ...] = ()

    def line(self, folder: str) -> str:
        if self.state == "collected":
            n = self.written + self.unchanged
            return f"{self.student}: collected {n} file{'s' if n != 1 else ''} ({self.written} written, {self.unchanged} unchanged)"
        if self.state == "nothing":
            return f"{self.student}: nothing to collect ({self.message or f'no ~/{folder}/'})"
        if self.state == "over-limit":
            return f"{self.student}: over the size limit, nothing collected: {self.message}"
        return f"{self.student}: NOT collected: {self.message}"


@dataclass(frozen=True)
class CollectResult:
    folder: str
    students: tuple[StudentCollect, ...]
    rows: tuple[Row, ...]

    def lines(self) -> list[str]:
        written = sum(s.written for s in self.students)
        nbytes = sum(s.bytes_written for s in self.students)
        head = (f"collect {self.folder}: {len(self.rows)} file(s) from {len(self.students)} student(s), "
                f"{written} written ({nbytes} bytes), manifest {MANIFEST_CSV}")
        out = [head]
        for student in self.students:
            out.append("  " + student.line(self.folder))
            out += [f"    {note}" for note in student.notes]
        return out


def render_manifest(rows: tuple[Row, ...] | list[Row]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: (r.student, r.file)):
        writer.writerow(row.csv_fields())
    return buffer.getvalue().encode("utf-8")


def parse_manifest(data: bytes) -> dict[tuple[str, str], Row]:
    """The rows of a MANIFEST.csv that came from a stick; rows that do not parse are left out."""
    rows: dict[tuple[str, str], Row] = {}
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8", "replace")))
        for item in reader:
            try:
                row = Row(item["student"], item["file"], int(item["size"]), int(item["mtime_ns"]),
                          item["sha256"], item.get("stored_as") or "")
            except (KeyError, TypeError, ValueError):
                continue
            if _SHA.fullmatch(row.sha256) and row.size >= 0:
                rows[(row.student, row.file)] = row
    except csv.Error:
        return rows
    return rows


def read_previous(dest: Path) -> dict[tuple[str, str], Row]:
    try:
        return parse_manifest(read_regular(dest / MANIFEST_CSV, MAX_MANIFEST))
    except OSError:
        return {}


def student_homes(home_dir: Path) -> list[str]:
    """The homes below `home_dir`: real folders (not links), not hidden, not lost+found, not root's."""
    names = []
    for name in sorted(os.listdir(home_dir)):
        try:
            st = os.lstat(home_dir / name)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and not name.startswith(".") and name != "lost+found" and st.st_uid != 0:
            names.append(name)
    return names


def folder_in(dir_fd: int, folder: str) -> str | None:
    """The entry of `dir_fd` named `folder`: exact, else the only case-insensitive match."""
    names = os.listdir(dir_fd)
    if folder in names:
        return folder
    matches = [n for n in names if n.lower() == folder.lower()]
    return matches[0] if len(matches) == 1 else None


def open_home(home_dir: Path, student: str) -> int:
    """A descriptor of the home `student` below `home_dir`, never through a link."""
    home_fd = os.open(home_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.open(student, _DIR, dir_fd=home_fd)
    finally:
        os.close(home_fd)


def open_home_folder(home_dir: Path, student: str, folder: str) -> tuple[int, str] | str:
    """(descriptor, actual name) of ~student/<folder>, opened without following links; else why not."""
    sub = open_home(home_dir, student)
    try:
        name = folder_in(sub, folder)
        if name is None:
            return f"no ~/{folder}/"
        try:
            return os.open(name, _DIR, dir_fd=sub), name
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                what = "a symbolic link" if stat.S_ISLNK(os.stat(name, dir_fd=sub, follow_symlinks=False).st_mode) else "not a folder"
                return f"~/{name} is {what}: not followed"
            raise
    finally:
        os.close(sub)


def _hash(handle) -> str:
    h = hashlib.sha256()
    while chunk := handle.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _write(dest: Path, stored: tuple[str, ...], handle, mtime_ns: int) -> tuple[str, int]:
    """Write `handle` from its start as dest/stored (temp file, fsync, rename); (sha256, bytes)."""
    dir_fd = open_dir(dest, stored[:-1], mode=0o755)
    try:
        fd, tmp = create_temp(dir_fd, stored[-1], 0o644)
        h, total = hashlib.sha256(), 0
        try:
            try:
                handle.seek(0)
                while chunk := handle.read(CHUNK):
                    h.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    total += len(chunk)
                os.fsync(fd)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
            os.rename(tmp, stored[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        return h.hexdigest(), total
    finally:
        os.close(dir_fd)


def _on_stick(dest: Path, stored: tuple[str, ...], size: int) -> bool:
    """A regular file of that size is at dest/stored."""
    try:
        dir_fd = open_dir(dest, stored[:-1], create=False)
    except OSError:
        return False
    try:
        st = os.stat(stored[-1], dir_fd=dir_fd, follow_symlinks=False)
        return stat.S_ISREG(st.st_mode) and st.st_size == size
    except OSError:
        return False
    finally:
        os.close(dir_fd)


@dataclass
class _Run:
    home_dir: Path
    folder: str
    dest: Path
    limits: CopyLimits
    previous: dict[tuple[str, str], Row]
    names: FatTree = field(default_factory=FatTree)
    rows: list[Row] = field(default_factory=list)


def _scan(run: _Run, student: str):
    opened = open_home_folder(run.home_dir, student, run.folder)
    if isinstance(opened, str):
        return opened
    fd, actual = opened
    try:
        return actual, scan_tree(fd, run.limits)
    finally:
        os.close(fd)


def _free(dest: Path) -> int:
    st = os.statvfs(dest)
    return st.f_bavail * st.f_frsize


def collect_student(run: _Run, student: str) -> StudentCollect:
    try:
        scanned = _scan(run, student)
    except TreeTooLarge as exc:
        return StudentCollect(student, "over-limit", str(exc))
    if isinstance(scanned, str):
        state = "nothing" if scanned.startswith("no ") else "refused"
        return StudentCollect(student, state, scanned)
    actual, scan = scanned
    notes = tuple(str(r) for r in scan.refusals)
    if not scan.files:
        return StudentCollect(student, "nothing", f"~/{actual}/ holds no files", notes=notes)
    written = unchanged = nbytes = 0
    for entry in scan.files:
        rel = "/".join((actual, *entry.rel))
        name = printable(entry.rel)
        stored = run.names.path((student, *entry.out))
        with open_below(run.home_dir, f"{student}/{rel}") as handle:
            st = os.fstat(handle.fileno())
            if (st.st_dev, st.st_ino) != (entry.st.st_dev, entry.st.st_ino):
                raise OSError(errno.ESTALE, "file changed while collecting", f"{student}/{rel}")
            sha = _hash(handle)
            before = run.previous.get((student, name))
            if before and before.sha256 == sha and before.size == st.st_size and before.stored() == "/".join(stored) \
                    and _on_stick(run.dest, stored, st.st_size):
                unchanged += 1
            else:
                if st.st_size + 65536 > _free(run.dest):
                    return StudentCollect(student, "not-written", f"the destination is full at {name} "
                                          f"({st.st_size} bytes, {_free(run.dest)} free)", written, unchanged, nbytes, notes)
                sha, size = _write(run.dest, stored, handle, st.st_mtime_ns)
                written, nbytes = written + 1, nbytes + size
        plain = f"{student}/{name}"
        run.rows.append(Row(student, name, st.st_size, st.st_mtime_ns, sha, "" if "/".join(stored) == plain else "/".join(stored)))
    return StudentCollect(student, "collected", "", written, unchanged, nbytes, notes)


def collect_homes(home_dir: Path, folder: str, dest: Path, limits: CopyLimits) -> CollectResult:
    """Collect ~/<folder>/ of every home below `home_dir` into `dest` (created if need be). Blocking.
    `limits` apply to each student's folder."""
    check_folder_name(folder)
    dest.mkdir(parents=True, exist_ok=True)
    previous = read_previous(dest)
    run = _Run(home_dir, folder, dest, limits, previous)
    results = []
    for student in student_homes(home_dir):
        try:
            result = collect_student(run, student)
        except OSError as exc:
            if exc.errno not in HOME_ERRORS:
                raise  # the destination (a stick pulled?): the caller's
            result = StudentCollect(student, "not-written", f"{exc.strerror or exc} ({printable((str(exc.filename),))})")
        log.info("collect_student", folder=folder, student=student, state=result.state, written=result.written,
                 unchanged=result.unchanged, message=result.message)
        results.append(result)
    write_atomic(dest / MANIFEST_CSV, render_manifest(run.rows))
    return CollectResult(folder, tuple(results), tuple(sorted(run.rows, key=lambda r: (r.student, r.file))))
