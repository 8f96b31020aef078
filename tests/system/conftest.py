"""Print the system test's stage timings (and where its journal was kept) in pytest's closing summary."""

from __future__ import annotations

import pytest

TIMINGS = pytest.StashKey[dict]()
JOURNAL = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    timings = config.stash.get(TIMINGS, None)
    if timings:
        terminalreporter.section("system test stages")
        for stage, seconds in timings.items():
            terminalreporter.write_line(f"{stage:48} {seconds:7.1f}s")
    journal = config.stash.get(JOURNAL, None)
    if journal:
        terminalreporter.write_line(f"the system test container's journal: {journal}")
