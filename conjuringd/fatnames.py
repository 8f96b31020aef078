"""Names every stick can hold (FAT, exFAT): pure.

FAT refuses `<>:"/\\|?*` and control characters, drops trailing dots and
spaces, reserves DOS device names (CON, NUL, COM1 ...) and does not tell
upper from lower case. `FatNamer` gives each name of one folder a name that
survives all of that, unique in that folder regardless of case, and keeps a
name that is already fine unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BAD = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))})
MAX_NAME = 255


def fat_safe(name: str) -> str:
    """`name` with what FAT cannot store replaced (without regard to other names in the folder)."""
    fixed = _BAD.sub("_", name).rstrip(" .")
    if not fixed:
        fixed = "_"
    if fixed.split(".")[0].lower() in _RESERVED:
        fixed = "_" + fixed
    if len(fixed) > MAX_NAME:
        stem, dot, ext = fixed.rpartition(".")
        keep = ext if dot and len(ext) < 16 else ""
        fixed = fixed[: MAX_NAME - len(keep) - 1] + "." + keep if keep else fixed[:MAX_NAME]
    return fixed


def _numbered(name: str, n: int) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f"~{n}"
    stem = stem[: MAX_NAME - len(suffix) - len(ext) - 1]
    return f"{stem}{suffix}.{ext}" if ext else f"{stem}{suffix}"


@dataclass
class FatNamer:
    """Names for the entries of one folder: call `name` once per entry, in a stable (sorted) order."""

    taken: set[str] = field(default_factory=set)  # lower-cased names given so far

    def name(self, original: str) -> str:
        wanted = fat_safe(original)
        candidate, n = wanted, 1
        while candidate.lower() in self.taken:
            n += 1
            candidate = _numbered(wanted, n)
        self.taken.add(candidate.lower())
        return candidate


@dataclass
class FatTree:
    """FAT-safe relative paths for a tree, one FatNamer per folder; the same input path always gets the
    same output path (within one FatTree)."""

    namers: dict[tuple[str, ...], FatNamer] = field(default_factory=dict)
    given: dict[tuple[str, ...], str] = field(default_factory=dict)

    def path(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for i in range(len(parts)):
            key = parts[: i + 1]
            if key not in self.given:
                self.given[key] = self.namers.setdefault(parts[:i], FatNamer()).name(parts[i])
            out.append(self.given[key])
        return tuple(out)
