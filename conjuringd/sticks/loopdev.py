"""Where a loop device's data comes from, seen from this machine's own mount namespace.

Loop devices belong to the kernel, not to a container: on a host that runs
several containers, every one of them sees every loop device attached by any
other (and devices a killed process left behind). The kernel records the
backing file's device and inode; a loop device counts as this machine's only
when the path in sysfs names, here, that same file.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

LOOP_GET_STATUS64 = 0x4C05
# struct loop_info64: lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit (u64);
# lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags (u32); file name, crypt name
# (64 bytes each), key (32 bytes); lo_init[2] (u64).
_STATUS64 = struct.Struct("=5Q4I64s64s32s2Q")


def _decode_dev(value: int) -> tuple[int, int]:
    """major, minor of the kernel's new_encode_dev() form kept in lo_device."""
    return (value & 0xFFF00) >> 8, (value & 0xFF) | ((value >> 12) & 0xFFF00)


def backing_file(node: str, sys_path: str) -> str | None:
    """The file behind loop device `node` (sysfs folder `sys_path`) when this process sees that
    very file; None when it is detached, deleted, or attached from another mount namespace
    (its path names another file here, or nothing)."""
    try:
        name = (Path(sys_path) / "loop" / "backing_file").read_text().rstrip("\n")
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            raw = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_STATUS64.size))
        finally:
            os.close(fd)
        st = os.stat(name)
    except OSError:
        return None
    lo_device, lo_inode = _STATUS64.unpack(raw)[:2]
    if (os.major(st.st_dev), os.minor(st.st_dev)) != _decode_dev(lo_device) or st.st_ino != lo_inode:
        return None
    return name


def under(path: str, folder: str) -> bool:
    """`path` lies inside `folder` (both absolute; no `..` games: the path is resolved first)."""
    resolved, root = os.path.realpath(path), os.path.realpath(folder)
    return resolved == root or resolved.startswith(root.rstrip("/") + "/")
