"""A stick (or `conjuringctl apply PATH`) layered onto the active configuration, file by file.

The original Conjuring copied a stick's `conjuring/custom/` over the box's own
`custom/` (`cp -Ru`): a stick carrying only `users.csv`, or only a new
`shared/week2/` file, changed just that and kept everything else. conjuringd
does the same by default: every file on the stick replaces the file of the same
path in the active configuration, and no file is removed. Two refinements:

- files with one role count as one file: `environment.yaml` replaces
  `environment.yml`, and `environment-geo.yml`, `environment_geo.yml` and
  `requirements-geo.txt` all define the kernel `geo`, so the stick's one replaces
  the box's;
- a file on the stick where the box has a folder of that name (or the other way
  round) replaces the folder (the box's files below it are listed as removed).

A stick that holds a file named `COMPLETE` (or `COMPLETE.txt`, any case) next to
`users.csv` declares itself complete: it replaces the whole configuration, as
every stick did before. The marker is not configuration: it is never part of a
snapshot or of a configuration's digest.

Pure functions on {relative path: file} maps; the snapshot store does the copying,
validates the result as a whole and snapshots it.
"""

from __future__ import annotations

import filecmp
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from conjuringd.config.load import ENVIRONMENT_RE, REQUIREMENTS_RE

MARKERS = frozenset({"complete", "complete.txt"})


def is_marker(name: str) -> bool:
    """`name` (a top-level file name) is the completeness marker."""
    return name.lower() in MARKERS


def find_marker(folder: Path) -> str:
    """The marker file's name in `folder` ("" if none): a regular file, never a link."""
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return ""
    for name in names:
        path = folder / name
        if is_marker(name) and path.is_file() and not path.is_symlink():
            return name
    return ""


@dataclass(frozen=True)
class MergeSummary:
    """Where each file of an imported configuration came from (relative paths, sorted)."""

    complete: bool  # the source declared itself complete and replaced everything
    added: tuple[str, ...] = ()  # from the source, new to the box
    replaced: tuple[str, ...] = ()  # from the source, replacing a different file of the box
    same: tuple[str, ...] = ()  # from the source, identical to the box's
    kept: tuple[str, ...] = ()  # the box's, not on the source: kept
    removed: tuple[str, ...] = ()  # the box's, gone (a complete source, or replaced by another name)
    marker: str = ""  # the marker's name on the source, "" when none

    @property
    def from_source(self) -> tuple[str, ...]:
        return tuple(sorted(self.added + self.replaced + self.same))

    def counts(self) -> dict:
        return {"complete": self.complete, "added": len(self.added), "replaced": len(self.replaced),
                "same": len(self.same), "kept": len(self.kept), "removed": len(self.removed)}


def role(rel: str) -> str:
    """What a file is for: files with the same role replace each other."""
    if "/" in rel:
        return rel
    env = ENVIRONMENT_RE.fullmatch(rel)
    if env is not None:
        kernel = env.group("kernel")
        return f"kernel:{kernel.lower()}" if kernel is not None else "environment"
    req = REQUIREMENTS_RE.fullmatch(rel)
    if req is not None:
        return f"kernel:{req.group('kernel').lower()}"
    return rel


def _folders(paths) -> set[str]:
    """Every folder that holds one of `paths` ("a/b/c" -> "a", "a/b")."""
    found = set()
    for rel in paths:
        parts = rel.split("/")
        found.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return found


def _clashes(rel: str, incoming: Mapping[str, Path], incoming_folders: set[str]) -> bool:
    """The box's file `rel` is in the way of the source's files: the source has files below a
    folder named `rel`, or a file where `rel` has a parent folder."""
    parts = rel.split("/")
    return rel in incoming_folders or any("/".join(parts[:i]) in incoming for i in range(1, len(parts)))


def plan_merge(base: Mapping[str, Path], incoming: Mapping[str, Path],
               complete: bool = False, marker: str = "") -> tuple[dict[str, Path], MergeSummary]:
    """The files of the merged configuration and where each came from.

    `base`: the active configuration's files; `incoming`: the source's (without the marker).
    `complete`: the source replaces everything."""
    if complete:
        merged = dict(incoming)
        removed = tuple(sorted(rel for rel in base if rel not in incoming))
        added, replaced, same = _compare(base, incoming)
        return merged, MergeSummary(True, added, replaced, same, (), removed, marker)
    roles, folders = {role(rel) for rel in incoming}, _folders(incoming)
    merged: dict[str, Path] = {}
    kept, removed = [], []
    for rel, path in base.items():
        if rel in incoming:
            continue
        if role(rel) in roles or _clashes(rel, incoming, folders):
            removed.append(rel)
        else:
            merged[rel] = path
            kept.append(rel)
    merged.update(incoming)
    added, replaced, same = _compare(base, incoming)
    return merged, MergeSummary(False, added, replaced, same, tuple(sorted(kept)), tuple(sorted(removed)), marker)


def _compare(base: Mapping[str, Path], incoming: Mapping[str, Path]) -> tuple[tuple[str, ...], ...]:
    added, replaced, same = [], [], []
    for rel in sorted(incoming):
        if rel not in base:
            added.append(rel)
        elif filecmp.cmp(base[rel], incoming[rel], shallow=False):
            same.append(rel)
        else:
            replaced.append(rel)
    return tuple(added), tuple(replaced), tuple(same)


__all__ = ["MARKERS", "MergeSummary", "find_marker", "is_marker", "plan_merge", "role"]
