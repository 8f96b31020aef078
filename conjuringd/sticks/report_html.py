"""REPORT.html: the facts of REPORT.txt for a teacher who never saw a terminal.

Pure, like `render_report`: the same StickReport in, one self-contained page out (conjuringd.htmlpage).
The result comes first in words and colour, then where students go, then every problem with its
file and line, what was applied and what it cost, and the rest. Every string from the stick (file
names, problems, labels) is escaped.
"""

from __future__ import annotations

from typing import Sequence

from conjuringd.config.problems import Severity
from conjuringd.htmlpage import esc, page
from conjuringd.reconcile.model import ReportFacts
from conjuringd.sheet import FILE_NAME as SHEET_NAME
from conjuringd.sticks.report import LISTED, RESULT_WORDS, StickReport, _active_lines, _kept_lines, _password_lines

CSS = """
main { max-width: 190mm; margin: 8mm auto; background: #fff; padding: 9mm 11mm; box-shadow: 0 1mm 6mm rgba(0,0,0,.2); }
@media print { main { box-shadow: none; margin: 0; padding: 0; max-width: none; } }
h1 { font-size: 22pt; color: #1f5f8b; }
h2 { font-size: 14pt; margin: 6mm 0 2mm; padding-bottom: 1mm; border-bottom: 0.4mm solid #d5dde3; }
.result { margin: 4mm 0; padding: 4mm 5mm; border-radius: 2mm; font-size: 15pt; font-weight: bold; }
.result small { display: block; font-weight: normal; font-size: 11pt; margin-top: 1mm; }
.ok { background: #e3f4e8; border-left: 2mm solid #2e8b57; }
.same { background: #eef2f5; border-left: 2mm solid #6b7f8e; }
.bad { background: #fde8e6; border-left: 2mm solid #c0392b; }
.stranger { background: #fff4d6; border-left: 2mm solid #d39e00; }
.address { font-size: 20pt; font-weight: bold; color: #10384f; overflow-wrap: anywhere; margin: 1mm 0; }
.sheet { font-size: 13pt; padding: 3mm 4mm; background: #eef6fc; border-radius: 2mm; }
table { border-collapse: collapse; width: 100%; font-size: 10.5pt; }
th, td { text-align: left; vertical-align: top; padding: 1.2mm 2mm; border-bottom: 0.3mm solid #e3e7ea; }
th { background: #f3f5f7; }
td.file { font-family: monospace; overflow-wrap: anywhere; }
.sev-error { color: #b0281a; font-weight: bold; }
.sev-warning { color: #8a6100; font-weight: bold; }
ul { margin: 1mm 0; padding-left: 6mm; }
li { overflow-wrap: anywhere; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 1mm 5mm; margin: 0; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f6f6; padding: 2mm 3mm; font-size: 9pt; }
"""

_CLASS = {"applied": "ok", "unchanged": "same", "invalid": "bad", "failed": "bad"}
_SUMMARY = {
    "applied": ("Done: the box now uses this stick's configuration.", "Students can work."),
    "unchanged": ("Nothing to do: the box already used this configuration.", "Students can work."),
    "invalid": ("Not applied: the configuration on this stick has mistakes.",
                "The box keeps running the previous configuration. Fix the problems below and insert the stick again."),
    "failed": ("Not applied: something went wrong.", "The box keeps running the previous configuration."),
}


def _section(title: str, inner: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{inner}</section>" if inner else ""


def _items(lines: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>" if lines else ""


def _problems(problems: Sequence) -> str:
    if not problems:
        return ""
    rows = []
    for p in problems:
        severity = p.severity.value if isinstance(p.severity, Severity) else str(p.severity)
        rows.append(f'<tr><td class="file">{esc(p.file)}</td><td>{esc(p.line or "")}</td>'
                    f'<td class="sev-{esc(severity)}">{esc(severity)}</td><td>{esc(p.message)}</td></tr>')
    return ("<table><thead><tr><th>File</th><th>Line</th><th>Kind</th><th>What is wrong</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def cost_words(facts: ReportFacts) -> list[str]:
    """What applying cost the class, in plain words, from the pass's changes."""
    changes = " ".join(facts.changes)
    words = []
    if "image built" in changes:
        words.append("The hub's software was rebuilt (this takes the longest).")
    if "replaced" in changes or "started" in changes:
        words.append("The hub restarted: students' running notebooks were stopped (their files are kept).")
    elif facts.changes and "FAILED" not in changes:
        words.append("Applied live: nobody was interrupted.")
    if not facts.changes:
        words.append("Nothing had to change.")
    if facts.seconds >= 1:
        words.append(f"It took {facts.seconds:.0f} seconds.")
    return words


def _where(facts: ReportFacts | None) -> str:
    if facts is None:
        return ""
    online = ""
    if facts.students_online is not None:
        online = (f"<p>Students online now: <b>{esc(facts.students_online)}</b>"
                  + (f" ({esc(facts.students_recent)} active in the last 10 minutes)" if facts.students_recent is not None
                     else "") + "</p>")
    address = f'<p class="address">{esc(facts.address)}</p>' if facts.address else "<p>The hub has no address yet.</p>"
    return (f"{address}<dl class=\"facts\"><dt>Hub</dt><dd>{esc(facts.hub_state)}</dd>"
            f"<dt>Accounts</dt><dd>{esc(facts.users)} ({esc(facts.admins)} teacher/admin)</dd>"
            + "".join(f"<dt>Also at</dt><dd>{esc(url)}</dd>" for url in facts.hub_urls if url != facts.address)
            + f"</dl>{online}")


def _sheet(sheet_written: bool, result: str) -> str:
    if sheet_written:
        return (f'<p class="sheet">The class sheet is on this stick: <a href="{SHEET_NAME}">{SHEET_NAME}</a> '
                "(open it and print it: a poster for the wall and one slip per student with their password).</p>")
    if result in ("applied", "unchanged"):
        return ("<p>No class sheet was written onto this stick: the box gives passwords only to a stick enrolled on it. "
                "On the box, as root: <code>conjuringctl sheet</code> writes it (or <code>conjuringctl enroll</code> "
                "enrols this stick).</p>")
    return ""


def _from_stick(report: StickReport) -> str:
    merge = report.outcome.merge
    if merge is None:
        return ""
    how = ("This stick is complete: it replaced the whole configuration." if merge.complete
           else "This stick's files were laid over the box's configuration (nothing else was removed).")
    rows = [(path, "new") for path in merge.added] + [(path, "replaced") for path in merge.replaced] + \
        [(path, "identical") for path in merge.same]
    listed = _items([f"{path} ({what})" for path, what in rows[:LISTED]])
    more = f"<p>... and {len(rows) - LISTED} more.</p>" if len(rows) > LISTED else ""
    return f"<p>{esc(how)}</p>{listed}{more}"


def render_report_html(report: StickReport, sheet_written: bool = False) -> str:
    outcome, facts = report.outcome, report.facts
    title, detail = _SUMMARY.get(outcome.result, (RESULT_WORDS.get(outcome.result, outcome.result.upper()), ""))
    if outcome.message:
        detail = f"{detail} {outcome.message}".strip()
    head = (f"<h1>Conjuring report</h1>"
            f'<div class="result {_CLASS.get(outcome.result, "bad")}">{esc(title)}<small>{esc(detail)}</small></div>')
    errors = [p for p in outcome.problems if p.severity is Severity.ERROR]
    body = [
        head,
        _section("Where students go", _where(facts) + _sheet(sheet_written, outcome.result)),
        _section(f"Problems ({len(errors)} error(s), {len(outcome.problems) - len(errors)} warning(s))",
                 _problems(outcome.problems)),
        _section("What was applied", _items(list(facts.changes)) if facts else ""),
        _section("What it cost", _items(cost_words(facts)) if facts and outcome.result in ("applied", "unchanged") else ""),
        _section("Active configuration", _items(_active_lines(report))),
        _section("Files from this stick", _from_stick(report)),
        _section("Files kept on the box", _items(_kept_lines(outcome.merge))),
        _section("Skipped files (not copied from the stick)", _items(list(report.refusals))),
        _section("Passwords made by this box", _items(_password_lines(report))),
        _section("Last lines of the failed build",
                 f"<pre>{esc(chr(10).join(facts.build_log_tail))}</pre>" if facts and facts.build_log_tail else ""),
        _section("Home backup", _items([report.backup] if report.backup else [])),
        _section("Coursework (collect/ and distribute/)", _items(list(report.coursework))),
        _section("Enrolment", _items([report.enrolment] if report.enrolment else [])),
        _section("This stick and this box", _details(report)),
    ]
    return page("Conjuring report", CSS, "<main>" + "".join(body) + "</main>")


def _details(report: StickReport) -> str:
    config = report.outcome.config_hash[:12] if report.outcome.config_hash else "-"
    return (f'<dl class="facts"><dt>Time</dt><dd>{esc(report.time)}</dd><dt>Box</dt><dd>{esc(report.hostname)}</dd>'
            f"<dt>Stick</dt><dd>{esc(report.label or '(no label)')} (UUID {esc(report.uuid or '?')}, "
            f"{esc(report.device)})</dd><dt>Configuration</dt><dd>{esc(config)}</dd></dl>")


def render_not_enrolled_html(when: str, hostname: str, label: str, fs_uuid: str, device: str) -> str:
    """REPORT.html for a stick this box does not trust: what happened and how to enrol, nothing else."""
    body = (
        "<h1>Conjuring report</h1>"
        '<div class="result stranger">This stick is not enrolled on this box.'
        "<small>The box did not read its configuration, changed nothing, and wrote nothing onto it but this report."
        "</small></div>"
        "<section><h2>To enrol it</h2><p>With the stick inserted in the box, run as root on the box:</p>"
        f"<pre>conjuringctl enroll {esc(device)}</pre><p>The box then applies its configuration.</p></section>"
        f'<section><h2>This stick and this box</h2><dl class="facts"><dt>Time</dt><dd>{esc(when)}</dd>'
        f"<dt>Box</dt><dd>{esc(hostname)}</dd><dt>Stick</dt><dd>{esc(label or '(no label)')} "
        f"(UUID {esc(fs_uuid or '?')}, {esc(device)})</dd></dl></section>"
    )
    return page("Conjuring report", CSS, "<main>" + body + "</main>")


__all__ = ["cost_words", "render_not_enrolled_html", "render_report_html"]
