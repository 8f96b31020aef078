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


def test_write_atomic_never_opens_what_the_stick_planted(tmp_path):
    """A FIFO under the old fixed temp name blocked the stick worker for ever; a link at the report's
    own name is replaced, never followed."""
    import os
    os.mkfifo(tmp_path / ".REPORT.txt.tmp")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "REPORT.txt").symlink_to(victim)
    write_atomic(tmp_path / "REPORT.txt", b"the report")
    assert (tmp_path / "REPORT.txt").read_bytes() == b"the report" and not (tmp_path / "REPORT.txt").is_symlink()
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".REPORT.txt.tmp", "REPORT.txt", "victim"]  # no temp left


def test_temp_names_are_random_and_exclusive(tmp_path, monkeypatch):
    import os
    from conjuringd.sticks import safewrite
    names = iter([".r.planted.conjuring-tmp", ".r.fresh.conjuring-tmp"])
    monkeypatch.setattr(safewrite, "temp_name", lambda name: next(names))
    os.mkfifo(tmp_path / ".r.planted.conjuring-tmp")
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd, tmp = safewrite.create_temp(dir_fd, "r")
        os.close(fd)
    finally:
        os.close(dir_fd)
    assert tmp == ".r.fresh.conjuring-tmp"
    monkeypatch.undo()
    assert safewrite.temp_name("r") != safewrite.temp_name("r")


def test_open_regular_refuses_fifo_link_and_folder_without_blocking(tmp_path):
    import os
    import pytest
    from conjuringd.sticks.safewrite import open_regular
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link").symlink_to("/etc/passwd")
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError, match=r"pipe is a named pipe \(FIFO\), not a regular file"):
        open_regular(tmp_path / "pipe")
    with pytest.raises(OSError, match="link is a symbolic link: not followed"):
        open_regular(tmp_path / "link")
    with pytest.raises(OSError, match="dir is a folder, not a regular file"):
        open_regular(tmp_path / "dir")
