"""`make run`'s script, end to end: the shipped custom/ served by the real daemon, a student logs in."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.docker import require_docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_main_job_prints_a_url_where_the_default_student_logs_in(tmp_path):
    require_docker()
    subprocess.run(["/usr/bin/docker", "rm", "-f", "conjuring"], capture_output=True)
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "run-main-job.sh"), "--exit-when-ready", "--state", str(tmp_path), "--timeout", "900"],
        cwd=REPO, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL,
        env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    # hub_ready printed this only after a real login (xsrf + POST /hub/login) and the lab answering
    made = json.loads((tmp_path / "state" / "secrets" / "generated-passwords.json").read_text())
    assert "=== conjuring hub is serving at http://" in proc.stdout
    assert f"log in as student1 / {made['student1']}" in proc.stdout, "the box's own password, not a shipped one"
    assert (tmp_path / "etc" / "custom" / "certs" / "host-ca.crt").exists()
    assert (tmp_path / "state" / "home" / "student1").is_dir()
