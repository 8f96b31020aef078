"""What the box writes onto a stick after an import: REPORT.txt, REPORT.html and, for an enrolled stick
whose configuration was applied, CLASS.html.

The one gate for passwords is here: a stick the box has not enrolled (a stranger, or any stick
while `[usb] trust = "any"` unless it carries a valid enrolment) receives no password at all: its
facts lose the generated passwords and the class sheet before anything is rendered.
"""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path

import structlog

from conjuringd.reconcile.model import ReportFacts
from conjuringd.sheet import FILE_NAME as SHEET_NAME, render_class_sheet
from conjuringd.sticks.admission import render_not_enrolled
from conjuringd.sticks.enrol import Verdict
from conjuringd.sticks.layout import REPORT_NAME, find_entry
from conjuringd.sticks.report import StickReport, render_report, write_atomic
from conjuringd.sticks.report_html import render_not_enrolled_html, render_report_html
from conjuringd.sticks.session import PULLED, StickSession

log = structlog.get_logger(__name__)

REPORT_HTML = "REPORT.html"
APPLIED = ("applied", "unchanged")


def gets_passwords(verdict: Verdict | None) -> bool:
    """The stick is enrolled on this box (on first use, checked, or carrying a valid enrolment
    while any stick is accepted): only such a stick may carry passwords away."""
    return verdict is not None and verdict.admitted and verdict.stick is not None


def for_stick(facts: ReportFacts | None, verdict: Verdict | None) -> ReportFacts | None:
    """`facts` as this stick may see them: without any password unless it is enrolled."""
    if facts is None or gets_passwords(verdict):
        return facts
    return replace(facts, generated_logins=(), sheet=None)


def render_files(report: StickReport, verdict: Verdict | None) -> tuple[tuple[str, bytes], ...]:
    """(file name, bytes) for conjuring/ on the stick, REPORT.txt first (the one that must get there)."""
    if verdict is not None and not verdict.admitted:
        args = (report.time, report.hostname, report.label, report.uuid, report.device)
        return ((REPORT_NAME, render_not_enrolled(*args).encode()),
                (REPORT_HTML, render_not_enrolled_html(*args).encode()))
    report = replace(report, facts=for_stick(report.facts, verdict))
    sheet = report.facts.sheet if report.facts is not None and report.outcome.result in APPLIED else None
    files = [(REPORT_NAME, render_report(report).encode()),
             (REPORT_HTML, render_report_html(report, sheet_written=sheet is not None).encode())]
    if sheet is not None:
        files.append((SHEET_NAME, render_class_sheet(sheet).encode()))
    return tuple(files)


def write_files(session: StickSession, files: tuple[tuple[str, bytes], ...]) -> Path:
    """Write each file into the stick's conjuring/ (an existing name in another case is replaced);
    returns REPORT.txt's path. After the first file, a full or failing stick only loses that file."""
    session.make_writable()
    layout = session.layout()
    if layout is None:
        raise OSError(errno.ENOENT, "the conjuring folder is gone from the stick")
    first: Path | None = None
    for name, data in files:
        path = find_entry(layout.conjuring, name, want_dir=False) or layout.conjuring / name
        try:
            write_atomic(path, data)
        except OSError as exc:
            if first is None or exc.errno in PULLED:
                raise
            log.warning("stick_file_not_written", file=name, error=exc.strerror or str(exc))
            continue
        first = first or path
    assert first is not None
    return first


__all__ = ["REPORT_HTML", "for_stick", "gets_passwords", "render_files", "write_files"]
