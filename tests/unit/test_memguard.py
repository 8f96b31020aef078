"""The per-student memory guard that runs inside the hub container: pure choices and a real /proc scan."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "memguard", Path(__file__).resolve().parents[2] / "conjuringd/hub/runtime/memguard.py")
memguard = importlib.util.module_from_spec(SPEC)
sys.modules["memguard"] = memguard  # dataclasses look their module up there
SPEC.loader.exec_module(memguard)
Proc = memguard.Proc
MiB = 1024**2


@pytest.mark.parametrize("text,expected", [("1G", 1024**3), ("512M", 512 * MiB), ("2.5g", int(2.5 * 1024**3)),
                                           ("1048576", MiB), ("64KB", 64 * 1024)])
def test_parse_size(text, expected):
    assert memguard.parse_size(text) == expected


def test_kernels_go_first_biggest_first_until_the_student_fits():
    procs = [
        Proc(1, 2001, 300 * MiB, "/opt/conjuring/venv/bin/python jupyterhub-singleuser"),
        Proc(2, 2001, 500 * MiB, "python -m ipykernel_launcher -f kernel-1.json"),
        Proc(3, 2001, 400 * MiB, "python -m ipykernel_launcher -f kernel-2.json"),
        Proc(4, 2002, 900 * MiB, "python -m ipykernel_launcher -f kernel-3.json"),  # another student, fits
        Proc(5, 0, 4000 * MiB, "jupyterhub"),  # the hub itself is never touched
    ]
    victims = memguard.choose_victims(procs, limit=1000 * MiB, min_uid=2000)
    assert [p.pid for p in victims] == [2]  # 1200 -> 700 MiB after ending the biggest kernel


def test_the_server_goes_only_when_no_kernel_is_left():
    procs = [Proc(1, 2001, 1500 * MiB, "jupyterhub-singleuser"), Proc(2, 2001, 100 * MiB, "ipykernel_launcher")]
    victims = memguard.choose_victims(procs, limit=1000 * MiB, min_uid=2000)
    assert [p.pid for p in victims] == [2, 1]


def test_enforce_ends_a_real_process_over_the_limit(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to run a process as another uid")
    hog = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(60)",
                            "ipykernel_launcher"], user=65000)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mine = [p for p in memguard.read_procs() if p.pid == hog.pid]
            if mine and mine[0].memory > 60 * MiB:
                break
            time.sleep(0.05)
        ended = memguard.enforce(limit=32 * MiB, min_uid=65000)
        assert [p.pid for p in ended] == [hog.pid]
        assert hog.wait(timeout=5) == -9
    finally:
        hog.kill()


def test_cpu_used_counts_what_every_process_of_a_student_ran_since_the_last_look():
    before = {1: 10.0, 2: 5.0, 3: 1.0, 5: 400.0}
    procs = [Proc(1, 2001, 0, "ipykernel", cpu=14.0), Proc(2, 2001, 0, "jupyterhub-singleuser", cpu=5.5),
             Proc(3, 2002, 0, "yes", cpu=1.5), Proc(4, 2001, 0, "/bin/bash", cpu=2.0),  # new: all it used
             Proc(5, 0, 0, "jupyterhub", cpu=500.0)]
    assert memguard.cpu_used(before, procs, min_uid=2000) == {2001: 6.5, 2002: 0.5}
    assert memguard.cpu_used(None, procs, min_uid=2000) == {}  # the first look only measures


@pytest.mark.parametrize("used,ran_for,expected", [
    (3.0, 3.0, 2.25),  # a spinner at 0.25 CPUs: paused three quarters of each interval
    (0.75, 0.75, 2.25),  # still spinning while unpaused: the same pause again, not an on/off swing
    (0.5, 3.0, 0.0),  # under the limit: never paused
    (1.5, 3.0, 1.5),  # half a CPU of demand: paused half the time
])
def test_pause_holds_the_average_to_the_limit(used, ran_for, expected):
    assert memguard.pause_for(used, ran_for, cpus=0.25, interval=3.0) == pytest.approx(expected)


@pytest.mark.parametrize("argv", [[sys.executable, "-c", "while True: pass", "ipykernel_launcher"], ["yes"]],
                         ids=["kernel", "not-a-kernel"])
def test_a_busy_student_process_is_held_to_its_cpu_limit(argv):
    if os.getuid() != 0:
        pytest.skip("needs root to run a process as another uid")
    spin = subprocess.Popen(argv, user=65001, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        start = [p for p in memguard.read_procs() if p.pid == spin.pid][0].cpu
        memguard.run(limit=None, cpus=0.25, min_uid=65001, interval=1.0, rounds=6)
        used = [p for p in memguard.read_procs() if p.pid == spin.pid][0].cpu - start
        # unthrottled it would use ~6 CPU-s; the first round only measures, then 0.25 CPU is enforced
        assert used < 2.8, f"used {used:.2f} CPU-s in 6 s"  # ~1 + 5 x 0.25 = 2.25 expected
    finally:
        spin.kill()
        spin.wait()
