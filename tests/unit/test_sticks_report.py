from conjuringd.config.problems import error, warning
from conjuringd.reconcile.model import ImportOutcome, ReportFacts
from conjuringd.sticks.report import StickReport, render_report, write_atomic

FACTS = ReportFacts(
    hub_state="serving",
    hub_urls=("http://10.42.0.1:8989",),
    users=24,
    admins=2,
    changes=("rebuilt layers: requirements, runtime",),
    active_config="a" * 64,
    active_source="stick CONJURING (UUID 1234-ABCD)",
)


def report(outcome, facts=FACTS, **kw):
    return StickReport("2026-11-26T14:00:00Z", "nuc-7", "/dev/sdb1", "CONJURING", "1234-ABCD", outcome, facts, **kw)


def test_applied_report_lists_everything_with_crlf():
    text = render_report(report(ImportOutcome("applied", "a" * 64), refusals=("shared/pipe: named pipe (FIFO) skipped",), backup="3 files written"))
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    for needle in ("nuc-7", "APPLIED", "http://10.42.0.1:8989", "Users: 24 (2 admins)", "rebuilt layers", "shared/pipe: named pipe", "3 files written", "2026-11-26T14:00:00Z"):
        assert needle in text, needle
    assert "NOT the active" not in text
    text.encode("utf-8")


def test_invalid_report_lists_every_problem_with_line():
    problems = (error("custom/users.csv", 3, "duplicate user 'jane' (first on line 2)"), warning("custom/apt.txt", 0, "empty"))
    text = render_report(report(ImportOutcome("invalid", problems=problems), facts=None))
    assert "custom/users.csv:3: error: duplicate user 'jane' (first on line 2)" in text
    assert "custom/apt.txt: warning: empty" in text
    assert "INVALID" in text and "previous configuration keeps running" in text


def test_later_stick_won():
    text = render_report(report(ImportOutcome("applied", "b" * 64)))
    assert "NOT the active" in text and "stick CONJURING (UUID 1234-ABCD)" in text


def test_failed_build_tail_and_newlines_in_messages_do_not_break_lines():
    facts = ReportFacts(hub_state="build failed", build_log_tail=("E: Unable to locate package nope",), active_config="a" * 64)
    text = render_report(report(ImportOutcome("failed", "c" * 64, message="build\nfailed"), facts=facts))
    assert "E: Unable to locate package nope" in text
    assert "Message:  build failed" in text


def test_write_atomic_replaces(tmp_path):
    target = tmp_path / "REPORT.txt"
    target.write_bytes(b"old")
    write_atomic(target, "neu ü\r\n".encode())
    assert target.read_bytes() == "neu ü\r\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["REPORT.txt"]
