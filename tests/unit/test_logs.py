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
