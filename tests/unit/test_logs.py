"""Log lines: logfmt for the journal, JSON on request, secrets redacted, pass context carried."""

import io
import json

import structlog

from conjuringd import logs


def emit(fmt: str) -> str:
    stream = io.StringIO()
    logs.configure(fmt, stream=stream)
    structlog.contextvars.bind_contextvars(pass_id=7, trigger="local: custom/ edited")
    try:
        structlog.get_logger("t").info("user_added", user="ana", password="hunter22")
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
    return stream.getvalue()


def test_auto_off_a_terminal_is_one_logfmt_line_with_pass_context_and_no_secret():
    line = emit("auto")
    assert line.count("\n") == 1
    assert line.startswith("level=info event=user_added ")
    assert 'trigger="local: custom/ edited"' in line and "pass_id=7" in line
    assert "hunter22" not in line and "password=***" in line


def test_json_is_one_object_per_line():
    event = json.loads(emit("json"))
    assert event["event"] == "user_added" and event["pass_id"] == 7 and event["password"] == "***"
    assert "timestamp" in event


def capture(fmt: str, **fields) -> str:
    stream = io.StringIO()
    logs.configure(fmt, stream=stream)
    try:
        structlog.get_logger("t").warning("stick_file_refused", **fields)
    finally:
        structlog.reset_defaults()
    return stream.getvalue()


def test_a_file_name_with_a_newline_cannot_forge_a_journal_line():
    forged = "notes.txt\nlevel=info event=config_activated config=deadbeef"
    for fmt in ("logfmt", "console"):
        out = capture(fmt, path=forged, reason="bad\r\x1b[31mred\u2028x")
        assert out.count("\n") == 1 and "\r" not in out and "\x1b[31m" not in out and "\u2028" not in out, out
        assert "notes.txt\\nlevel=info event=config_activated" in out
    line = capture("logfmt", path="a\\nb")  # a real backslash-n stays distinguishable from an escaped newline
    assert "a\\\\nb" in line
    assert json.loads(capture("json", path=forged))["path"] == forged  # JSON escapes by itself


def test_a_traceback_in_logfmt_is_one_line():
    stream = io.StringIO()
    logs.configure("logfmt", stream=stream)
    try:
        try:
            raise OSError("name\nlevel=info event=forged")
        except OSError:
            structlog.get_logger("t").exception("step_failed")
    finally:
        structlog.reset_defaults()
    out = stream.getvalue()
    assert out.count("\n") == 1 and "Traceback" in out and "\\nlevel=info event=forged" in out
