"""The machine's own conjuring.toml (/etc/conjuring/conjuring.toml), and what happens when it is broken.

A typo in the machine file must never stop the daemon or refuse a teacher's stick.
`load_machine` checks the file; when it has an error, the settings in effect are the
last machine file that had none (a copy kept in the state folder), or the defaults,
and the problems travel with them so the daemon can say so (journal, status, STATUS=).
A machine file with no errors is remembered as the new last good one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conjuringd import atomic
from conjuringd.config.files import MIB, read_regular
from conjuringd.config.model import Settings
from conjuringd.config.problems import Problem, has_errors
from conjuringd.config.settings import build, check_channel, check_settings, read_toml

FILE = "file"  # the machine file as it is
NONE = "none"  # there is no machine file: defaults
LAST_GOOD = "last good"  # the file is broken: the last machine file without errors
DEFAULTS = "defaults"  # the file is broken and none was ever good: defaults


@dataclass(frozen=True)
class MachineSettings:
    """The machine settings in effect: checked data, where they come from, the file's problems."""

    path: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # the valid part, nested tables (do not mutate)
    problems: tuple[Problem, ...] = ()  # of the machine file as it is now
    source: str = NONE
    raw: bytes = field(default=b"", repr=False)  # the TOML in effect (b"" for defaults)

    @property
    def broken(self) -> bool:
        return has_errors(self.problems)

    @property
    def settings(self) -> Settings:
        return build(Settings, self.data)

    def summary(self) -> str:
        """One line for the status when the file is broken, "" otherwise."""
        if not self.broken:
            return ""
        errors = sum(1 for p in self.problems if p.severity.value == "error")
        using = "the last good machine settings" if self.source == LAST_GOOD else "the default machine settings"
        return f"{self.path} has {errors} error(s): running with {using} (fix it; it is re-read when saved)"


def check_machine(raw: bytes, file: str) -> tuple[dict[str, Any], list[Problem]]:
    """The valid part of a machine file and its problems (all of them, channel included)."""
    toml = read_toml(raw, file)
    clean = check_settings(toml, machine=True)
    return clean, toml.problems + check_channel(build(Settings, clean), toml)


def read_machine(path: Path | None) -> MachineSettings:
    """The machine file as it is, with no fallback (conjuringctl validate shows its errors)."""
    if path is None or not os.path.lexists(path):
        return MachineSettings(str(path or ""))
    raw, problem = read_regular(Path(path), str(path), MIB)
    if raw is None:
        return MachineSettings(str(path), problems=(problem,) if problem else ())
    clean, problems = check_machine(raw, str(path))
    return MachineSettings(str(path), clean, tuple(problems), FILE, raw)


def load_machine(path: Path | None, good: Path | None, save: bool = True) -> MachineSettings:
    """The machine settings in effect: the file when it has no error (then remembered in `good`
    if `save`), else the last good file, else the defaults; the file's problems either way."""
    current = read_machine(path)
    if not current.broken:
        if save and good is not None and current.source == FILE:
            _remember(good, current.raw)
        return current
    fallback = _last_good(good)
    if fallback is None:
        return MachineSettings(current.path, {}, current.problems, DEFAULTS, b"")
    return MachineSettings(current.path, fallback[0], current.problems, LAST_GOOD, fallback[1])


def _remember(good: Path, raw: bytes) -> None:
    try:
        if good.is_file() and good.read_bytes() == raw:
            return
        atomic.write_bytes(good, raw, mode=0o600)
    except OSError:
        pass  # the state folder is not writable (a test, a read-only box): fall back to defaults later


def _last_good(good: Path | None) -> tuple[dict[str, Any], bytes] | None:
    if good is None:
        return None
    raw, _ = read_regular(good, str(good), MIB) if os.path.lexists(good) else (None, None)
    if raw is None:
        return None
    clean, problems = check_machine(raw, str(good))
    return None if has_errors(problems) else (clean, raw)


class MachineSource:
    """The daemon's view of the machine file: re-checked when its content changes."""

    def __init__(self, path: Path, good: Path, save: bool = True):
        self.path = path
        self.good = good
        self.save = save
        self._seen: tuple[bytes | None, MachineSettings | None] = (None, None)

    def _content(self) -> bytes | None:
        try:
            return self.path.read_bytes() if os.path.lexists(self.path) else b"\0absent"
        except OSError:
            return None  # unreadable: always re-check (and report it)

    def current(self) -> MachineSettings:
        """The settings in effect (the file is re-checked only when its content changed)."""
        content = self._content()
        seen_content, seen = self._seen
        if content is not None and seen is not None and seen_content == content:
            return seen
        machine = load_machine(self.path, self.good, self.save)
        self._seen = (content, machine)
        return machine


__all__ = ["MachineSettings", "MachineSource", "check_machine", "load_machine", "read_machine"]
