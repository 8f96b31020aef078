"""Reading /proc/self/mountinfo: what is mounted where (pure parsing)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ARCHIVE_FS = frozenset({"vfat", "msdos", "exfat", "ntfs", "ntfs3", "fuseblk"})


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    dev: str  # "major:minor"
    root: str
    mount_point: str
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    raw, i, out = os.fsencode(field), 0, bytearray()
    while i < len(raw):
        if raw[i] == 0x5C and i + 3 < len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields or len(fields) < 10:
            continue
        sep = fields.index("-", 6)
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                dev=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                options=tuple(fields[5].split(",")),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
            )
        )
    return entries


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read())


def mounts_of(entries: list[MountEntry], devnode: str, dev: str) -> list[MountEntry]:
    """Mounts whose source is `devnode` or whose device number is `dev` ("major:minor")."""
    return [e for e in entries if e.source == devnode or e.dev == dev]


def mount_at(entries: list[MountEntry], mount_point: str) -> MountEntry | None:
    """The topmost mount exactly at `mount_point` (the last one listed)."""
    found = [e for e in entries if e.mount_point == mount_point]
    return found[-1] if found else None


def containing_mount(entries: list[MountEntry], path: Path) -> MountEntry | None:
    """The mount that holds `path` (longest mount point that is a prefix of it)."""
    target = os.path.realpath(path)
    best: MountEntry | None = None
    for entry in entries:
        mp = entry.mount_point
        if target == mp or target.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point):
                best = entry
    return best


def needs_archive(fstype: str) -> bool:
    """Filesystems that cannot keep Unix owners and modes (FAT, exFAT, NTFS, FUSE ones)."""
    return fstype in ARCHIVE_FS or fstype.startswith("fuse.")
