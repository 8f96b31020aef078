r"""structlog, configured once: key=value lines by default, JSON lines on request.

`auto` (the default): coloured, aligned lines on a terminal; logfmt lines
(`level=info event=pass_start pass_id=3 trigger="local: custom/ edited"`) when
not on a terminal, e.g. under systemd, where each line is one journal entry.
`console` and `logfmt` force one of those; `json` gives one JSON object per
line. Every line of a reconcile pass carries `pass_id` and `trigger`.
Unexpected errors carry their traceback; expected ones are one line.

Outside JSON, every value is escaped before it is rendered (backslash and
control characters, newlines included, become `\\`, `\n`, `\x1b`...): a file
name or message from a stick can never start a line of its own in the journal,
nor send escape sequences to a terminal. In logfmt a traceback is one line too.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog

SECRET_KEYS = frozenset({"password", "passphrase", "token", "psk"})


def _redact(_logger: object, _name: str, event: dict) -> dict:
    for key in SECRET_KEYS & event.keys():
        event[key] = "***"
    return event


_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """`text` with backslashes and control characters written as escapes: one line, nothing a terminal obeys."""
    return _UNSAFE.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                                             else f"\\u{ord(m.group()):04x}"), text)


def _escape_values(_logger: object, _name: str, event: dict) -> dict:
    for key, value in event.items():
        if not isinstance(value, (bool, int, float, type(None))) and key != "exc_info":
            event[key] = escape(str(value))
    return event


def configure(fmt: str = "auto", level: str = "info", stream=None) -> None:
    stream = stream or sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    if fmt == "auto":
        fmt = "console" if tty else "logfmt"
    timestamper: list = []
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        timestamper = [structlog.processors.TimeStamper(fmt="iso", utc=True)]
    elif fmt == "logfmt":  # the journal adds its own timestamps
        renderer = structlog.processors.LogfmtRenderer(key_order=["level", "event"], bool_as_flag=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=tty, pad_event=0)
        timestamper = [structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False)]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _redact,
            *timestamper,
            structlog.processors.StackInfoRenderer(),
            *([structlog.processors.format_exc_info] if fmt != "console" else []),
            *([_escape_values] if fmt != "json" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
