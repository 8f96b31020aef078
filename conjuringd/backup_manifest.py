"""MANIFEST.json of a home backup: its entries, and a strict reader for a file that may come
from a stick anyone could have written.

The reader opens the file without following links or blocking on a FIFO, bounds its
size and nesting, and checks every field's type and range: a manifest-level problem
is a BackupError naming it, a bad entry is one problem (the entry is left out), never
an exception from deep inside.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from conjuringd.config.problems import ConjuringError
from conjuringd.sticks.report import write_atomic
from conjuringd.sticks.safewrite import read_regular

MANIFEST = "MANIFEST.json"
MAX_MANIFEST = 256 * 1024**2
KINDS = ("file", "dir", "symlink")
_SHA = re.compile(r"[0-9a-f]{64}")
_TOP = {"version", "mode", "written", "entries"}


class BackupError(ConjuringError):
    """A backup or restore could not be done (no space, unreadable manifest)."""


@dataclass(frozen=True)
class Entry:
    path: str  # relative, POSIX
    kind: str  # "file" | "dir" | "symlink"
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    sha256: str = ""
    target: str = ""  # symlink target
    archive: str = ""  # archive mode: the tar holding the latest copy

    def same_as(self, other: "Entry | None") -> bool:
        """Unchanged since `other` (metadata comparison, like rsync's quick check)."""
        if other is None:
            return False
        mine = (self.kind, self.mode, self.uid, self.gid, self.size, self.target)
        theirs = (other.kind, other.mode, other.uid, other.gid, other.size, other.target)
        return mine == theirs and (self.kind == "dir" or self.mtime_ns == other.mtime_ns)


@dataclass
class Manifest:
    mode: str
    entries: dict[str, Entry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # entries left out, one line each


_INTS = {"mode": (0, 0o7777), "uid": (0, 2**32 - 2), "gid": (0, 2**32 - 2), "mtime_ns": (-(2**63), 2**63 - 1),
         "size": (0, 2**63 - 1)}
_STRS = ("path", "kind", "sha256", "target", "archive")
_REQUIRED = ("path", "kind", "mode", "uid", "gid", "mtime_ns")


def check_rel(rel: str) -> str:
    """'' if `rel` is a safe relative path below a folder, else what is wrong with it."""
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or ".." in parts or "." in parts or "\x00" in rel or "//" in rel:
        return f"unsafe path {rel!r}"
    return ""


def _field_problem(key: str, value: object) -> str:
    if key in _INTS:
        low, high = _INTS[key]
        if type(value) is not int:
            return f"{key} should be a whole number, not {type(value).__name__}"
        return "" if low <= value <= high else f"{key} {value} is out of range"
    if key in _STRS:
        return "" if isinstance(value, str) and "\x00" not in value else f"{key} should be text"
    return f"unknown key {key!r}"


def parse_entry(raw: object) -> Entry:
    """One manifest entry, or BackupError saying what is wrong with it."""
    if not isinstance(raw, dict):
        raise BackupError(f"should be an object, not {type(raw).__name__}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise BackupError(f"lacks {', '.join(missing)}")
    for key, value in raw.items():
        if problem := _field_problem(str(key), value):
            raise BackupError(problem)
    entry = Entry(**raw)
    problem = check_rel(entry.path)
    if not problem and entry.kind not in KINDS:
        problem = f"kind {entry.kind!r} is not one of {', '.join(KINDS)}"
    if not problem and entry.sha256 and not _SHA.fullmatch(entry.sha256):
        problem = "sha256 is not 64 hex digits"
    if not problem and entry.kind == "symlink" and not entry.target:
        problem = "a symlink without a target"
    if problem:
        raise BackupError(problem)
    return entry


def parse_manifest(data: object) -> Manifest:
    if not isinstance(data, dict):
        raise BackupError(f"{MANIFEST} should hold an object, not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _TOP)
    if unknown:
        raise BackupError(f"{MANIFEST} has unknown keys: {', '.join(unknown)}")
    if data.get("version", 1) != 1:
        raise BackupError(f"{MANIFEST} is version {data.get('version')!r}; this box reads version 1")
    mode, entries = data.get("mode", "mirror"), data.get("entries", [])
    if mode not in ("mirror", "archive"):
        raise BackupError(f"{MANIFEST} mode should be \"mirror\" or \"archive\", not {mode!r}")
    if not isinstance(entries, list):
        raise BackupError(f"{MANIFEST} entries should be a list")
    manifest = Manifest(mode)
    for number, raw in enumerate(entries, 1):
        path = raw.get("path") if isinstance(raw, dict) else None
        where = f"{MANIFEST} entry {number}" + (f" ({path})" if isinstance(path, str) else "")
        try:
            entry = parse_entry(raw)
        except BackupError as exc:
            manifest.problems.append(f"{where}: {exc}: skipped")
            continue
        if entry.path in manifest.entries:
            manifest.problems.append(f"{where}: listed twice: skipped")
            continue
        manifest.entries[entry.path] = entry
    return manifest


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in `folder`, None if there is none; BackupError if it cannot be used."""
    try:
        raw = read_regular(folder / MANIFEST, MAX_MANIFEST)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupError(f"unreadable {MANIFEST} in {folder}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested beyond what json can parse
        raise BackupError(f"unreadable {MANIFEST} in {folder}: not JSON ({str(exc)[:80]})") from exc
    return parse_manifest(data)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    body = {
        "version": 1,
        "mode": manifest.mode,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "entries": [vars(e) for _, e in sorted(manifest.entries.items())],
    }
    write_atomic(folder / MANIFEST, json.dumps(body, indent=1).encode("ascii"))
