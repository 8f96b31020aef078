"""The blocking steps of handling one stick, run in the adapter's executor.

`StickSession` mounts (or reuses the desktop's mount), copies the
configuration into staging, backs up homes, writes the report, and always
leaves the mount as it found it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import structlog

from conjuringd.adapters.mounts import Mounted, Mounter
from conjuringd.backup import BackupError, backup_homes
from conjuringd.config.checks import check_compose_override, compose_beside, compose_text
from conjuringd.sticks.copy import CopyLimits, Refusal, safe_copy
from conjuringd.sticks.layout import BACKUP_NAME, StickLayout, find_entry, find_layout

log = structlog.get_logger(__name__)

HOMES_NAME = "home"  # the original's student homes (custom/home): never read from a stick
HOMES_NOTE = Refusal(HOMES_NAME, "student homes are never taken from a stick (a stick cannot change or delete a "
                     "home): not copied; use 'conjuringctl restore' or 'conjuringctl migrate' on the box")

# errors that mean "the stick went away or broke under us"
PULLED = frozenset({errno.EIO, errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTCONN, errno.ESTALE, errno.ENOTDIR})


@dataclass(frozen=True)
class StickInfo:
    device: str
    dev: str  # "major:minor"
    fstype: str
    label: str
    uuid: str


class StickSession:
    """One mount of one stick: use as a context manager (in an executor thread)."""

    def __init__(self, mounter: Mounter, stick: StickInfo, *, writable: bool = False):
        self.mounter, self.stick, self.writable = mounter, stick, writable
        self.mounted: Mounted | None = None

    def __enter__(self) -> "StickSession":
        existing = self.mounter.existing(self.stick.device, self.stick.dev)
        if existing is not None:
            self.mounted = Mounted(self.stick.device, Path(existing.mount_point), existing.fstype, False, existing.read_only)
            log.info("stick_using_existing_mount", device=self.stick.device, mount_point=existing.mount_point)
        else:
            self.mounted = self.mounter.mount(self.stick.device, self.stick.fstype, read_only=not self.writable)
            log.info("stick_mounted", device=self.stick.device, mount_point=str(self.mounted.mount_point),
                     read_only=self.mounted.read_only)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mounted is not None and self.mounted.ours:
            self.mounter.unmount(self.mounted)
            log.info("stick_unmounted", device=self.stick.device)
        self.mounted = None

    @property
    def root(self) -> Path:
        assert self.mounted is not None
        return self.mounted.mount_point

    def layout(self) -> StickLayout | None:
        return find_layout(self.root)

    def make_writable(self) -> None:
        """Read-write for the backup or the report; OSError (EROFS/EACCES) on a locked stick."""
        assert self.mounted is not None
        if self.mounted.read_only and self.mounted.ours:
            self.mounted = self.mounter.remount_rw(self.mounted)
        elif self.mounted.read_only:
            # the desktop's mount is read-only (or looks so in our sandbox): mount it ourselves too
            log.info("stick_desktop_mount_read_only", device=self.stick.device, mount_point=str(self.mounted.mount_point))
            self.mounted = self.mounter.mount(self.stick.device, self.stick.fstype, read_only=False)


def stage_custom(custom: Path, staging: Path, limits: CopyLimits, on_file: Callable[[int], None] | None) -> tuple[Path, list[str]]:
    """Copy `custom` into a fresh folder under `staging`; return (folder, refusals). Cleans up on error."""
    staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="stick-", dir=staging))
    try:
        limits = replace(limits, exclude=limits.exclude | {BACKUP_NAME, HOMES_NAME})
        refusals = safe_copy(custom, folder / "custom", limits, on_file=on_file)
        if find_entry(custom, HOMES_NAME) is not None:
            refusals.insert(0, HOMES_NOTE)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for refusal in refusals:
        log.warning("stick_file_refused", path=refusal.path, reason=refusal.reason)
    return folder / "custom", [str(r) for r in refusals]


def compose_notes(conjuring: Path) -> list[str]:
    """conjuring/docker-compose.override.yml (the original's place, beside custom/) is never used:
    one line each for the report, naming the conjuring.toml keys that replace what it sets."""
    notes = []
    for path in compose_beside(conjuring):
        for problem in check_compose_override(compose_text(path), f"conjuring/{path.name}"):
            log.warning("compose_override_ignored", file=problem.file, message=problem.message)
            notes.append(f"{problem.file}: {problem.message}")
    return notes


def run_backup(session: StickSession, target: Path, home_dir: Path) -> str:
    """Back up homes onto the stick; one line for the report."""
    try:
        session.make_writable()
        layout = session.layout()  # a FUSE remount moved things: find the folder again
        where = layout.home_backup if layout and layout.home_backup else target
        result = backup_homes(home_dir, where)
        return f"backup written to {where.relative_to(session.root)}: {result.summary()}"
    except BackupError as exc:
        log.warning("backup_failed", device=session.stick.device, error=str(exc))
        return f"backup NOT written: {exc}"
    except OSError as exc:
        if exc.errno in PULLED:
            raise
        log.warning("backup_failed", device=session.stick.device, error=str(exc))
        return f"backup NOT written: {exc.strerror or exc}"


def device_present(device: str, dev: str) -> bool:
    """The device node still exists, is the same device number and has media (size > 0)."""
    try:
        st = os.stat(device)
        with open(f"/sys/class/block/{Path(device).name}/size") as handle:
            size = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return False
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == dev and size > 0
