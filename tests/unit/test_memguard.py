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
            if mine and mine[0].rss > 60 * MiB:
                break
            time.sleep(0.05)
        ended = memguard.enforce(limit=32 * MiB, min_uid=65000)
        assert [p.pid for p in ended] == [hog.pid]
        assert hog.wait(timeout=5) == -9
    finally:
        hog.kill()
