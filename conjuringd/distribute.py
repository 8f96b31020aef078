"""Hand a teacher's folder out into every student's home as `~/<folder>/`, file by file.

The teacher's copy is kept in the state folder (`distribute/<folder>/files/`) with a record of what each
student was given (`given.json`: student -> path -> SHA-256), so a later round knows which files a
student has not touched. A file the student does not have is added; one identical to the teacher's is
left; one still as it was given is replaced by a newer teacher version; one the student changed (or
anything else in the way) is kept. Nothing is deleted. Runs as root into homes students control, so
every folder is opened with O_NOFOLLOW relative to its parent, files are created under an exclusive temp
name and linked (added: never over anything) or renamed (replaced) into place, and what is created is
given to the student (the home's owner, checked against the box's stable UIDs).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import structlog

from conjuringd.collect import check_folder_name, open_home, student_homes
from conjuringd.hashing import file_sha256
from conjuringd.sticks.copy import CopyLimits, safe_copy
from conjuringd.sticks.report import write_atomic
from conjuringd.sticks.safewrite import create_temp, open_regular

log = structlog.get_logger(__name__)

STORE = "distribute"
GIVEN = "given.json"
CHUNK = 1 << 20
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class TeacherFile:
    parts: tuple[str, ...]
    sha256: str
    mode: int
    mtime_ns: int


@dataclass
class StudentDistribute:
    student: str
    added: int = 0
    updated: int = 0
    same: int = 0
    kept: int = 0  # the student's own version kept
    refused: str = ""  # why nothing was given
    notes: list[str] = field(default_factory=list)

    def line(self, folder: str) -> str:
        if self.refused:
            return f"{self.student}: NOT given: {self.refused}"
        return (f"{self.student}: {self.added} added, {self.updated} updated, {self.same} already there, "
                f"{self.kept} kept (the student's own version)")


@dataclass(frozen=True)
class DistributeResult:
    folder: str
    students: tuple[StudentDistribute, ...]

    def lines(self) -> list[str]:
        kept = sum(s.kept for s in self.students)
        updated = sum(s.updated for s in self.students)
        out = [f"distribute {self.folder}: {len(self.students)} student(s), {updated} file(s) updated, "
               f"{kept} kept because the student changed them"]
        for student in self.students:
            out.append("  " + student.line(self.folder))
            out += [f"    {note}" for note in student.notes]
        return out


def store_dir(state_dir: Path, folder: str) -> Path:
    return state_dir / STORE / check_folder_name(folder)


def store_distribution(src: Path, folder: str, state_dir: Path, limits: CopyLimits) -> list[str]:
    """Copy `src` (a stick's folder, not trusted) as the teacher's copy of `folder`; the refusals."""
    where = store_dir(state_dir, folder)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh, old = where / "files.new", where / "files.old"
    for leftover in (fresh, old):
        shutil.rmtree(leftover, ignore_errors=True)
    refusals = safe_copy(src, fresh, limits)
    if (where / "files").exists():
        os.rename(where / "files", old)
    os.rename(fresh, where / "files")
    shutil.rmtree(old, ignore_errors=True)
    return [str(r) for r in refusals]


def teacher_files(files: Path) -> tuple[list[tuple[str, ...]], list[TeacherFile]]:
    """The folders and files of the teacher's copy (ours: written by store_distribution)."""
    dirs, found = [], []
    for root, subdirs, names in os.walk(files):
        subdirs.sort()
        rel = Path(root).relative_to(files).parts
        if rel:
            dirs.append(tuple(rel))
        for name in sorted(names):
            path = Path(root) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                found.append(TeacherFile((*rel, name), file_sha256(path), st.st_mode, st.st_mtime_ns))
    return dirs, found


def _sha_fd(fd: int) -> str:
    h = hashlib.sha256()
    while chunk := os.read(fd, CHUNK):
        h.update(chunk)
    return h.hexdigest()


def read_given(where: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads((where / GIVEN).read_text())
        return {str(s): {str(k): str(v) for k, v in files.items()} for s, files in data.get("students", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _owner(home_dir: Path, student: str, owners: Mapping[str, int]) -> tuple[int, int] | str:
    st = os.lstat(home_dir / student)
    if st.st_uid == 0:
        return "the home belongs to root"
    known = owners.get(student)
    if known is not None and known != st.st_uid:
        return f"the home belongs to UID {st.st_uid}, but this box's UID for {student} is {known}"
    return st.st_uid, st.st_gid


def _subdir(parent: int, name: str, owner: tuple[int, int]) -> int:
    """parent/name as a folder of the student's (created 0755 and chowned if missing), never a link."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
        created = True
    except FileExistsError:
        created = False
    fd = os.open(name, _DIR, dir_fd=parent)
    if created:
        os.fchown(fd, *owner)
    return fd


def _install(dir_fd: int, name: str, src: Path, tf: TeacherFile, owner: tuple[int, int], replace: bool) -> None:
    fd, tmp = create_temp(dir_fd, name, 0o600)
    try:
        try:
            with open(src, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            os.fchown(fd, *owner)
            os.fchmod(fd, 0o755 if tf.mode & 0o111 else 0o644)
            os.utime(fd, ns=(tf.mtime_ns, tf.mtime_ns))
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # replaces the name, never follows it
        else:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)  # never over anything
    finally:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def _one_file(dir_fd: int, tf: TeacherFile, files: Path, owner, before: str, result: StudentDistribute) -> str:
    """Give one file; returns the SHA-256 to remember as given ("" = nothing given)."""
    name, rel = tf.parts[-1], "/".join(tf.parts)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        _install(dir_fd, name, files.joinpath(*tf.parts), tf, owner, replace=False)
        result.added += 1
        return tf.sha256
    if not stat.S_ISREG(st.st_mode):
        result.kept += 1
        result.notes.append(f"{rel}: something else is in the way (not a regular file): kept")
        return before
    fd = open_regular(name, dir_fd=dir_fd)
    try:
        theirs = _sha_fd(fd)
    finally:
        os.close(fd)
    if theirs == tf.sha256:
        result.same += 1
        return tf.sha256
    if before and theirs == before:  # as we gave it: the student has not touched it
        _install(dir_fd, name, files.joinpath(*tf.parts), tf, owner, replace=True)
        result.updated += 1
        return tf.sha256
    result.kept += 1
    result.notes.append(f"{rel}: the student's own version kept")
    return before


def give_student(home_dir: Path, student: str, folder: str, files: Path, content, owners, given: dict[str, str]) -> StudentDistribute:
    dirs, tfiles = content
    result = StudentDistribute(student)
    owner = _owner(home_dir, student, owners)
    if isinstance(owner, str):
        result.refused = owner
        return result
    student_fd = open_home(home_dir, student)
    try:
        top = _subdir(student_fd, folder, owner)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        result.refused = f"~/{folder} is a symbolic link or not a folder: not followed, nothing written"
        return result
    finally:
        os.close(student_fd)
    fds: dict[tuple[str, ...], int] = {(): top}
    try:
        for parts in dirs:
            parent = fds.get(parts[:-1])
            if parent is None:
                continue
            try:
                fds[parts] = _subdir(parent, parts[-1], owner)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                result.notes.append(f"{'/'.join(parts)}/: something else is in the way: kept, nothing written below it")
        for tf in tfiles:
            dir_fd = fds.get(tf.parts[:-1])
            if dir_fd is None:
                result.kept += 1
                continue
            sha = _one_file(dir_fd, tf, files, owner, given.get("/".join(tf.parts), ""), result)
            if sha:
                given["/".join(tf.parts)] = sha
    finally:
        for fd in fds.values():
            os.close(fd)
    return result


def distribute_folder(state_dir: Path, folder: str, home_dir: Path, owners: Mapping[str, int],
                      *, only_new: bool = False) -> DistributeResult:
    """Give the stored teacher's copy of `folder` to every home (with `only_new`: to homes not given it yet)."""
    where = store_dir(state_dir, folder)
    files = where / "files"
    content = teacher_files(files)
    record = read_given(where)
    results = []
    for student in student_homes(home_dir):
        if only_new and student in record:
            continue
        given = dict(record.get(student, {}))
        try:
            result = give_student(home_dir, student, folder, files, content, owners, given)
        except OSError as exc:
            result = StudentDistribute(student, refused=f"{exc.strerror or exc}")
        if not result.refused:
            record[student] = given
        log.info("distribute_student", folder=folder, student=student, added=result.added, updated=result.updated,
                 same=result.same, kept=result.kept, refused=result.refused)
        results.append(result)
    write_atomic(where / GIVEN, json.dumps({"students": record}, sort_keys=True, indent=1).encode())
    return DistributeResult(folder, tuple(results))


def seed_new_homes(state_dir: Path, home_dir: Path, owners: Mapping[str, int]) -> list[DistributeResult]:
    """Every stored distribution into the homes that have not had it yet (students added since). Blocking."""
    store = state_dir / STORE
    if not store.is_dir() or not home_dir.is_dir():
        return []
    done = []
    for folder in sorted(p.name for p in store.iterdir() if (p / "files").is_dir()):
        result = distribute_folder(state_dir, folder, home_dir, owners, only_new=True)
        if result.students:
            done.append(result)
    return done
