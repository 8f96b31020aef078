"""A fresh box with the shipped configuration, as the real daemon serves it before any stick.

The shipped custom/users.csv once held passwords printed in this repository (an admin among
them): anyone on the classroom network could log in. Now each row says "(generated)" and the
box makes its own passwords on first start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conjuringd.adapters.hub_http import HubSession
from tests.support.daemon import REPO, Daemon
from tests.support.docker import DOCKER, require_docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXAMPLES = {"student1": "change-me-1", "student2": "change-me-2", "teacher": "change-me-teacher", "foo": "bar"}
URL = "http://127.0.0.1:8989"


@pytest.fixture
def box(tmp_path):
    require_docker()
    subprocess.run([DOCKER, "rm", "-f", "conjuring", "conjuring-previous"], capture_output=True)
    shipped = tmp_path / "shipped"
    shutil.copytree(REPO / "custom", shipped)
    (shipped / "certs").mkdir()  # the build trusts this machine's CAs (a TLS proxy), as make run does
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", shipped / "certs" / "host-ca.crt")
    (tmp_path / "box").mkdir()
    d = Daemon(tmp_path / "box", args=["--hub", "docker", "--network", "none", "--usb", "none"], default_custom=shipped)
    yield d
    d.close()
    subprocess.run([DOCKER, "rm", "-f", "conjuring", "conjuring-previous"], capture_output=True)


def test_a_fresh_box_refuses_the_example_passwords_and_accepts_its_own(box):
    box.start()
    box.wait_status(lambda s: str(s.get("phase", "")).startswith("serving 3 users"), timeout=1200)
    made_file = box.state_dir / "secrets" / "generated-passwords.json"
    assert made_file.stat().st_mode & 0o777 == 0o600 and (box.state_dir / "secrets").stat().st_mode & 0o777 == 0o700
    made = json.loads(made_file.read_text())
    assert set(made) == {"student1", "student2", "teacher"}
    for name, example in EXAMPLES.items():
        assert HubSession(URL, timeout=60).login(name, example) == 403, f"{name}/{example} let in"
    assert HubSession(URL, timeout=60).login("teacher", "") == 403
    student = HubSession(URL, timeout=120)
    assert student.login("student1", made["student1"]) == 302
    assert student.wait_lab("student1", 240) == 200
    teacher = HubSession(URL, timeout=60)
    assert teacher.login("teacher", made["teacher"]) == 302
    status, _, _ = teacher.request("GET", "/hub/api/users")
    assert status == 200, "the teacher is the admin"
    shown = box.ctl("status", "--show-passwords")
    assert shown.returncode == 0, shown.stderr
    for name, password in made.items():
        assert f"  {name:<8}  {password}" in shown.stdout, shown.stdout
    assert "generated" not in box.ctl("status").stdout, "only --show-passwords shows them"
    box.stop()
    box.start()  # a restart keeps the box's passwords
    box.wait_event("converged", count=2, timeout=300)
    assert json.loads(made_file.read_text()) == made
    assert HubSession(URL, timeout=60).login("student2", made["student2"]) == 302
