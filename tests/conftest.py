"""Suite-wide: a closing table of how long each part of the suite took (CI stage timings)."""

from __future__ import annotations

import collections
import time
from pathlib import Path

_TESTS = Path(__file__).parent


def _stage(nodeid: str) -> str:
    parts = nodeid.split("/")
    if len(parts) > 2 and parts[1] == "integration":
        name = parts[2].split(".py")[0].removeprefix("test_")
        return f"integration/{name.split('_')[0]}"
    return "/".join(parts[:2]) if len(parts) > 1 else nodeid


def pytest_configure(config):
    config._stage_seconds = collections.Counter()
    config._stage_started = time.monotonic()


def pytest_report_teststatus(report, config):
    # runs for every phase (setup/call/teardown) of every test: the durations add up per stage
    config._stage_seconds[_stage(report.nodeid)] += getattr(report, "duration", 0.0)


def pytest_terminal_summary(terminalreporter, config):
    seconds = config._stage_seconds
    if not seconds:
        return
    terminalreporter.section("time per stage")
    for stage, total in sorted(seconds.items()):
        terminalreporter.write_line(f"{stage:32} {total:8.1f} s")
    terminalreporter.write_line(f"{'whole run':32} {time.monotonic() - config._stage_started:8.1f} s")
