"""Class start smoke run (issue 7): ten students log in at once against a real hub in a real dockerd.

Runs tests/bench/classroom.py's variants for N=10 side by side and prints the
table into the CI log: the original Conjuring's settings (baseline, whatever it
gets), ours (must give every student an executed cell), ours with conjuringd
prewarming the servers, and that plus numpy preloaded in the fork server (both
must too). The image is the hub tests' image plus numpy
(docker's layer cache keeps everything before the requirements layer).
"""

from __future__ import annotations

import pytest

from tests.bench.classroom import run_variant, table
from tests.support.docker import require_docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

N = 10
PORT = 18992


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    require_docker()
    root = tmp_path_factory.mktemp("classroom")
    return {key: run_variant(root, key, N, PORT, "", timeout=240) for key in ("baseline", "ours", "prewarm", "preload")}


def test_ten_students_at_once_all_get_an_executed_cell_with_ours(results, capsys):
    with capsys.disabled():
        print("\n" + table(list(results.values())) + "\n")
    ours = results["ours"]
    assert "error" not in ours, ours.get("error")
    assert ours["ok"] == N, dict(ours["failures"])
    assert ours["health_failed"] == 0  # /hub/health answered 200 all through the class start
    assert ours["saw_place_in_line"] >= 1  # queued with their place shown, not refused
    assert "error" not in results["baseline"], results["baseline"].get("error")  # baseline ran (any outcome)


@pytest.mark.parametrize("variant", ["prewarm", "preload"])
def test_prewarmed_servers_are_ready_before_class_and_every_student_gets_a_cell(results, variant):
    warm = results[variant]
    assert "error" not in warm, warm.get("error")
    assert warm["prewarm_ok"] == N and not warm["prewarm_failed"]
    assert warm["ok"] == N, dict(warm["failures"])
    assert warm["saw_progress"] == 0  # the servers were running: no spawn-pending page at all
    assert warm["health_failed"] == 0
