"""Where things are on a stick: `conjuring/custom`, `conjuring/home_backup`, the report.

FAT drivers may present upper-case 8.3 names (`CONJURING/CUSTOM`), so every
name is looked up case-insensitively; an exact-case match wins.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

REPORT_NAME = "REPORT.txt"
BACKUP_NAME = "home_backup"
SWITCH_NOW_NAME = "SWITCH-NOW"


def find_entry(folder: Path, name: str, *, want_dir: bool = True) -> Path | None:
    """`folder/<name>` matched case-insensitively, never through a symlink."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    candidates = sorted(n for n in names if n.lower() == name.lower())
    if name in candidates:
        candidates.remove(name)
        candidates.insert(0, name)
    for candidate in candidates:
        path = folder / candidate
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if (stat.S_ISDIR(mode) if want_dir else stat.S_ISREG(mode)):
            return path
    return None


KNOWN_TOP = {
    n.lower(): n
    for n in ("users.csv", "apt.txt", "environment.yml", "requirements.txt", "base.Dockerfile", "conjuring.toml",
              "docker-compose.override.yml", "shared", "home_default", "srv", "certs", BACKUP_NAME)
}
_KERNEL_FILE = re.compile(r"(environment-.+\.yml|requirements-.+\.txt)")


def canonical_name(parent: tuple[str, ...], name: str) -> str:
    """The configuration's own spelling of a name a FAT driver may show upper-cased."""
    lower = name.lower()
    if not parent:
        if lower in KNOWN_TOP:
            return KNOWN_TOP[lower]
        return lower if _KERNEL_FILE.fullmatch(lower) else name
    if parent == ("srv",) and lower == "jupyterhub_config.py":
        return lower
    if parent == ("certs",) and lower.endswith(".crt"):
        return name[:-4] + ".crt"
    return name


@dataclass(frozen=True)
class StickLayout:
    conjuring: Path  # the stick's conjuring/ folder
    custom: Path | None  # conjuring/custom, None if absent
    home_backup: Path | None  # conjuring/home_backup or conjuring/custom/home_backup

    @property
    def switch_now(self) -> bool:
        """conjuring/SWITCH-NOW: a new hub waiting for the class takes over now."""
        return find_entry(self.conjuring, SWITCH_NOW_NAME, want_dir=False) is not None

    @property
    def report(self) -> Path:
        """Where the report goes: an existing REPORT.TXT in any case is replaced."""
        existing = find_entry(self.conjuring, REPORT_NAME, want_dir=False)
        return existing or self.conjuring / REPORT_NAME


def find_layout(root: Path) -> StickLayout | None:
    """The conjuring layout of a mounted stick, or None when it is not a conjuring stick."""
    conjuring = find_entry(root, "conjuring")
    if conjuring is None:
        return None
    custom = find_entry(conjuring, "custom")
    backup = find_entry(conjuring, BACKUP_NAME)
    if backup is None and custom is not None:
        backup = find_entry(custom, BACKUP_NAME)
    return StickLayout(conjuring=conjuring, custom=custom, home_backup=backup)
