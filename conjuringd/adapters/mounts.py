"""Mounting sticks: reuse a desktop's mount, else a private read-only mount.

Kernel filesystems are mounted with the mount(2) syscall (MS_RDONLY, MS_NOSUID,
MS_NODEV, MS_NOEXEC); filesystems the kernel lacks (vfat here) go through a
FUSE helper (fusefat). Everything here blocks: call it from an executor.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from conjuringd.config.problems import TransientError
from conjuringd.sticks.mountinfo import MountEntry, mount_at, mounts_of, read_mountinfo

log = structlog.get_logger(__name__)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MNT_DETACH = 2
SAFE_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
KERNEL_DATA = {"vfat": "utf8,shortname=mixed", "exfat": "iocharset=utf8"}
FUSE_HELPERS = {  # fstype -> (program, stay-in-foreground arguments, read-only option, read-write option)
    "vfat": ("fusefat", ("-f",), "ro", "rw+"),
    "exfat": ("mount.exfat-fuse", ("-d",), "ro", "rw"),
    "ntfs": ("ntfs-3g", ("-o", "no_detach"), "ro", "rw"),
}
KERNEL_ALIASES = {"ntfs": ("ntfs3", "ntfs")}


@dataclass
class Mounted:
    device: str
    mount_point: Path
    fstype: str
    ours: bool  # we mounted it and must unmount it
    read_only: bool = True
    fuse: subprocess.Popen | None = field(default=None, repr=False)
    abandoned: bool = False  # given up on (a stuck stick): unmount() leaves it alone


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    return libc


def sys_mount(source: str | None, target: Path, fstype: str | None, flags: int, data: str = "") -> None:
    enc = lambda s: os.fsencode(s) if s is not None else None  # noqa: E731
    if _libc().mount(enc(source), enc(str(target)), enc(fstype), flags, enc(data) if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source or ''} on {target}: {os.strerror(err)}")


def sys_umount(target: Path, flags: int = 0) -> None:
    if _libc().umount2(os.fsencode(str(target)), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def kernel_filesystems(path: str = "/proc/filesystems") -> frozenset[str]:
    with open(path) as handle:
        return frozenset(line.split()[-1] for line in handle if line.strip())


def kernel_type(fstype: str, available: frozenset[str]) -> str | None:
    """The kernel driver for `fstype`, or None when the kernel lacks it."""
    for name in KERNEL_ALIASES.get(fstype, (fstype,)):
        if name in available:
            return name
    return None


class Mounter:
    def __init__(self, media_dir: Path):
        self.media_dir = media_dir
        self._active: list[Mounted] = []  # our mounts in use, for abandon()
        self._lock = threading.Lock()

    def _track(self, mounted: Mounted) -> Mounted:
        with self._lock:
            self._active.append(mounted)
        return mounted

    def abandon(self) -> int:
        """Give up on every mount in use (called from the event loop when a stick operation is
        stuck): detach it lazily and end its FUSE helper, which fails the stuck reads with ENOTCONN.
        The thread that used it finds `abandoned` set and does not touch the mount point again."""
        with self._lock:
            mounts, self._active = self._active, []
            for mounted in mounts:
                mounted.abandoned = True
        for mounted in mounts:
            try:
                sys_umount(mounted.mount_point, MNT_DETACH)
            except OSError as exc:
                log.warning("abandon_unmount_failed", mount_point=str(mounted.mount_point), error=exc.strerror)
            if mounted.fuse is not None and mounted.fuse.poll() is None:
                mounted.fuse.kill()
            log.warning("stick_abandoned", device=mounted.device, mount_point=str(mounted.mount_point),
                        fuse=mounted.fuse is not None)
        return len(mounts)

    def existing(self, device: str, dev: str) -> MountEntry | None:
        """A mount of `device` that someone else made (e.g. the desktop under /media)."""
        for entry in mounts_of(read_mountinfo(), device, dev):
            if not Path(entry.mount_point).is_relative_to(self.media_dir):
                return entry
        return None

    def target_for(self, device: str) -> Path:
        return self.media_dir / Path(device).name

    def mount(self, device: str, fstype: str, *, read_only: bool = True) -> Mounted:
        target = self.target_for(device)
        self.media_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if mount_at(read_mountinfo(), str(target)) is not None:
            log.info("stale_mount_removed", mount_point=str(target))
            sys_umount(target, MNT_DETACH)
        target.mkdir(mode=0o700, exist_ok=True)
        driver = kernel_type(fstype, kernel_filesystems())
        if driver:
            flags = SAFE_FLAGS | (MS_RDONLY if read_only else 0)
            try:
                sys_mount(device, target, driver, flags, KERNEL_DATA.get(fstype, ""))
            except OSError as exc:
                if exc.errno != errno.EBUSY or read_only:
                    raise
                # still mounted read-only by a thread we abandoned: share that mount, then make it writable
                sys_mount(device, target, driver, flags | MS_RDONLY, KERNEL_DATA.get(fstype, ""))
                try:
                    sys_mount(None, target, None, MS_REMOUNT | SAFE_FLAGS)
                except OSError:
                    sys_umount(target, MNT_DETACH)
                    raise
            return self._track(Mounted(device, target, fstype, True, read_only))
        return self._mount_fuse(device, fstype, target, read_only)

    def _mount_fuse(self, device: str, fstype: str, target: Path, read_only: bool) -> Mounted:
        if fstype not in FUSE_HELPERS or not shutil.which(FUSE_HELPERS[fstype][0]):
            raise OSError(errno.ENODEV, f"no kernel driver and no FUSE helper for {fstype}")
        program, foreground, ro, rw = FUSE_HELPERS[fstype]
        options = f"{ro if read_only else rw},nosuid,nodev,noexec"
        proc = subprocess.Popen(
            [program, *foreground, "-o", options, device, str(target)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while mount_at(read_mountinfo(), str(target)) is None:
            if proc.poll() is not None:
                raise OSError(errno.EIO, f"{program} exited with {proc.returncode} mounting {device}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TransientError(f"{program} did not mount {device} within 10 s")
            time.sleep(0.01)
        return self._track(Mounted(device, target, fstype, True, read_only, proc))

    def remount_rw(self, mounted: Mounted) -> Mounted:
        """Read-write for writing the report; raises OSError (EROFS, EACCES) on a locked stick."""
        if mounted.abandoned:
            raise OSError(errno.ENOTCONN, "the stick was abandoned")
        if mounted.fuse is not None:
            self.unmount(mounted)
            return self.mount(mounted.device, mounted.fstype, read_only=False)
        sys_mount(None, mounted.mount_point, None, MS_REMOUNT | SAFE_FLAGS)
        mounted.read_only = False
        return mounted

    def unmount(self, mounted: Mounted) -> None:
        """Unmount what we mounted (lazily when busy), wait for a FUSE helper, flush the device."""
        if not mounted.ours:
            return
        with self._lock:
            if mounted.abandoned:
                return  # detached already; the mount point may belong to a newer mount by now
            self._active = [m for m in self._active if m is not mounted]
        try:
            sys_umount(mounted.mount_point)
        except OSError as exc:
            if exc.errno == errno.EINVAL and mount_at(read_mountinfo(), str(mounted.mount_point)) is None:
                pass  # already gone
            elif exc.errno in (errno.EBUSY, errno.EIO, errno.ENOTCONN):
                log.warning("unmount_lazy", mount_point=str(mounted.mount_point), error=exc.strerror)
                sys_umount(mounted.mount_point, MNT_DETACH)
            else:
                raise
        if mounted.fuse is not None:
            try:
                mounted.fuse.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("fuse_helper_stuck", device=mounted.device)
                mounted.fuse.kill()
                mounted.fuse.wait()
        flush_device(mounted.device)
        try:
            mounted.mount_point.rmdir()
        except OSError:
            pass


def flush_device(device: str) -> None:
    """fsync the block device so nothing waits in its cache (ignored when it is gone)."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
