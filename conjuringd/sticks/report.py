"""REPORT.txt: what happened to a stick's configuration, readable on any laptop.

Rendering is pure (`render_report`); `write_atomic` puts the bytes on the
stick so that pulling it right after loses nothing: temp file, fsync, rename,
fsync of the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from conjuringd.merge import MergeSummary
from conjuringd.reconcile.model import ImportOutcome, ReportFacts
from conjuringd.sticks.safewrite import create_temp

RESULT_WORDS = {
    "applied": "APPLIED - this configuration is now active",
    "unchanged": "UNCHANGED - this configuration was already active, nothing to do",
    "invalid": "INVALID - not applied, the previous configuration keeps running",
    "failed": "FAILED - not applied, the previous configuration keeps running",
}


@dataclass(frozen=True)
class StickReport:
    """Everything a report says about one insertion of one stick."""

    time: str  # ISO 8601, UTC
    hostname: str
    device: str
    label: str
    uuid: str
    outcome: ImportOutcome
    facts: ReportFacts | None = None
    refusals: tuple[str, ...] = ()
    backup: str = ""  # one line about the home backup, "" if none was asked for
    enrolment: str = ""  # whether this stick is enrolled on this box (sticks/enrol.py), "" = not said
    coursework: tuple[str, ...] = ()  # collect/ and distribute/ (sticks/coursework.py), one line each


def _section(title: str, lines: Sequence[str]) -> list[str]:
    return ["", title, "-" * len(title), *lines] if lines else []


def _active_lines(report: StickReport) -> list[str]:
    facts, outcome = report.facts, report.outcome
    if facts is None or not facts.active_config:
        return []
    mine = outcome.config_hash and outcome.config_hash == facts.active_config
    if outcome.result in ("applied", "unchanged") and not mine:
        return [
            "NOTE: this stick's configuration is NOT the active one:",
            f"a later change won: {facts.active_source or facts.active_config[:12]}",
        ]
    return [f"Active configuration: {facts.active_config[:12]} ({facts.active_source or 'unknown source'})"]


def _hub_lines(facts: ReportFacts | None) -> list[str]:
    if facts is None:
        return []
    lines = [f"Hub: {facts.hub_state}"]
    if facts.address:
        lines.append(f"  students type: {facts.address}")
    lines += [f"  open in a browser: {url}" for url in facts.hub_urls]
    lines.append(f"Users: {facts.users} ({facts.admins} admin{'s' if facts.admins != 1 else ''})")
    return lines


def _password_lines(report: StickReport) -> list[str]:
    """Passwords the box made, for a stick whose configuration is active (it chose these users)."""
    facts = report.facts
    if facts is None or not facts.generated_logins or report.outcome.result not in ("applied", "unchanged"):
        return []
    width = max(len(name) for name, _, _ in facts.generated_logins)
    lines = ["users.csv says (generated) for these users, so this box made their passwords.",
             "Keep this report safe; write your own passwords in users.csv to replace them.", ""]
    lines += [f"  {name:<{width}}  {password}{'   (admin)' if admin else ''}"
              for name, password, admin in facts.generated_logins]
    return lines


def _sheet_lines(report: StickReport) -> list[str]:
    """Where the class sheet is: beside this report when the stick received it (sticks/stickfiles.py)."""
    if report.facts is None or report.facts.sheet is None or report.outcome.result not in ("applied", "unchanged"):
        return []
    return ["CLASS.html beside this report: open it in a browser and print it (a poster for the wall,",
            "one slip per student with their password). REPORT.html is this report for a browser."]


LISTED = 40  # files named per list; the rest are counted


def _listed(paths: Sequence[str], note: str = "") -> list[str]:
    lines = [f"  {path}{note}" for path in paths[:LISTED]]
    if len(paths) > LISTED:
        lines.append(f"  ... and {len(paths) - LISTED} more")
    return lines


def _from_stick_lines(merge: MergeSummary | None) -> list[str]:
    if merge is None:
        return []
    if merge.complete:
        head = [f"This stick declares itself complete ({merge.marker}): it replaces the whole configuration."]
    else:
        head = ["This stick's files were laid over the box's active configuration: each replaces the file of",
                "the same name, nothing else is removed (add a file named COMPLETE to replace everything)."]
    return (head + _listed(merge.added, "   (new)") + _listed(merge.replaced, "   (replaced)")
            + _listed(merge.same, "   (identical)"))


def _kept_lines(merge: MergeSummary | None) -> list[str]:
    if merge is None:
        return []
    lines = []
    if merge.kept:
        lines += [f"Kept from the box's configuration ({len(merge.kept)} file(s), not on this stick):", *_listed(merge.kept)]
    if merge.removed:
        why = "not on this complete stick" if merge.complete else "replaced by a file of the same role on this stick"
        lines += [f"Removed from the box's configuration ({len(merge.removed)} file(s), {why}):", *_listed(merge.removed)]
    return lines


def render_report(report: StickReport) -> str:
    """The report as text with CRLF line endings (Windows Notepad shows it right)."""
    outcome, facts = report.outcome, report.facts
    lines = [
        "Conjuring report",
        "================",
        f"Time:     {report.time}",
        f"Box:      {report.hostname}",
        f"Stick:    {report.label or '(no label)'} (UUID {report.uuid or '?'}, {report.device})",
        f"Result:   {RESULT_WORDS.get(outcome.result, outcome.result.upper())}",
    ]
    if outcome.config_hash:
        lines.append(f"Config:   {outcome.config_hash[:12]}")
    if outcome.message:
        lines.append(f"Message:  {outcome.message}")
    lines += _active_lines(report)
    lines += _section("Enrolment", [report.enrolment] if report.enrolment else [])
    lines += _section("Files from this stick", _from_stick_lines(outcome.merge))
    lines += _section("Files kept on the box", _kept_lines(outcome.merge))
    lines += _section("Problems", [str(p) for p in outcome.problems])
    lines += _section("Skipped files (not copied from the stick)", list(report.refusals))
    if facts is not None:
        lines += _section("What changed", list(facts.changes))
        lines += _section("Hub", _hub_lines(facts))
        lines += _section("Class sheet", _sheet_lines(report))
        lines += _section("Passwords made by this box", _password_lines(report))
        lines += _section("Last lines of the failed build", list(facts.build_log_tail))
    lines += _section("Home backup", [report.backup] if report.backup else [])
    lines += _section("Coursework (collect/ and distribute/)", list(report.coursework))
    lines.append("")
    return "\r\n".join(line.replace("\r", "").replace("\n", " ") for line in lines)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: exclusive temp file, fsync, rename, fsync the folder.
    Nothing already on the stick is opened (a FIFO or link planted under the temp name
    cannot block or redirect the write)."""
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd, tmp = create_temp(dir_fd, path.name, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
