"""Coursework through an enrolled stick: `conjuring/distribute/<folder>/` into every home, then every
home's `~/<folder>/` into `conjuring/collect/<folder>/<student>/`. Run in the stick adapter's executor
after the stick's configuration was imported, under the gate home backups have: the stick is enrolled,
its configuration was applied (or already active), and it names the users (users.csv) or is complete.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from conjuringd.collect import CoursefolderError, check_folder_name, collect_homes
from conjuringd.config.model import UsbSettings
from conjuringd.distribute import distribute_folder, store_distribution
from conjuringd.reconcile.model import ImportOutcome
from conjuringd.sticks.copy import CopyLimits, TreeTooLarge
from conjuringd.sticks.layout import find_entry
from conjuringd.sticks.mountinfo import needs_archive
from conjuringd.sticks.session import StickSession
from conjuringd.uids import UidMap

log = structlog.get_logger(__name__)

COLLECT, DISTRIBUTE = "collect", "distribute"


def names_the_users(outcome: ImportOutcome) -> bool:
    """A partial stick (one new shared/ file, say) is not enough to earn every student's home: as
    before sticks were merged, the stick must say who the users are (users.csv), or be complete."""
    merge = outcome.merge
    return merge is None or merge.complete or "users.csv" in merge.from_source


def refusal(outcome: ImportOutcome) -> str:
    """Why this stick may not reach the homes ("" = it may): the home backup's gate."""
    if outcome.result not in ("applied", "unchanged"):
        return f"this stick's configuration was refused ({outcome.result.upper()})"
    if not names_the_users(outcome):
        return "only a stick that carries users.csv (or is COMPLETE) reaches the homes; this one was merged without it"
    return ""


def wanted(conjuring: Path) -> bool:
    return any(find_entry(conjuring, name) is not None for name in (COLLECT, DISTRIBUTE))


def _folders(parent: Path | None, fat: bool) -> list[tuple[Path, str]]:
    """(stick folder, folder name in the homes) below conjuring/collect or conjuring/distribute.
    An all-upper-case name on FAT is the 8.3 spelling of a lower-case one."""
    if parent is None:
        return []
    found = []
    for path in sorted(parent.iterdir()):
        if find_entry(parent, path.name) != path:
            continue  # not a folder (or a link): never followed
        name = path.name.lower() if fat and path.name.isupper() else path.name
        found.append((path, name))
    return found


def limits(usb: UsbSettings) -> CopyLimits:
    return CopyLimits(usb.max_files, usb.max_bytes, max_file_bytes=usb.max_file_bytes)


def _distribute(src: Path, name: str, home_dir: Path, state_dir: Path, usb: UsbSettings) -> list[str]:
    try:
        check_folder_name(name)
        refused = store_distribution(src, name, state_dir, limits(usb))
    except (CoursefolderError, TreeTooLarge) as exc:
        return [f"distribute {name}: NOT distributed: {exc}"]
    result = distribute_folder(state_dir, name, home_dir, UidMap(state_dir / "uids.json").known())
    return result.lines() + [f"  not taken from the stick: {r}" for r in refused]


def _collect(dest: Path, name: str, home_dir: Path, usb: UsbSettings) -> list[str]:
    try:
        return collect_homes(home_dir, name, dest, limits(usb)).lines()
    except CoursefolderError as exc:
        return [f"collect {name}: NOT collected: {exc}"]


def run_coursework(session: StickSession, home_dir: Path, state_dir: Path, usb: UsbSettings) -> list[str]:
    """Blocking: distribute, then collect; the report's lines."""
    session.make_writable()
    layout = session.layout()
    if layout is None:
        return ["coursework: the conjuring folder is gone from the stick"]
    fat = needs_archive(session.stick.fstype)
    lines: list[str] = []
    for src, name in _folders(find_entry(layout.conjuring, DISTRIBUTE), fat):
        lines += _distribute(src, name, home_dir, state_dir, usb)
    for dest, name in _folders(find_entry(layout.conjuring, COLLECT), fat):
        lines += _collect(dest, name, home_dir, usb)
    log.info("coursework_done", device=session.stick.device, lines=len(lines))
    return lines or ["coursework: conjuring/collect/ and conjuring/distribute/ hold no folder"]
