"""The real conjuringd (--hub docker) and a requirements.txt change in the watched local folder mid-lesson.

ana holds a variable in a kernel; requirements.txt gains tabulate: status says the new hub is ready and
waiting for 1 active student, ana's kernel keeps its variable; `conjuringctl switch` lets the new hub take
over and tabulate imports. The daemon's own container names (`conjuring`, `conjuring-next`) are used, under
the docker lock, as tests/integration/test_hub_interrupted.py does.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conjuringd.adapters.hub_http import health
from tests.support.daemon import Daemon
from tests.support.docker import DOCKER, require_docker
from tests.support.hubworld import container_logs, login, start_kernel
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PORT = 18975
BASE = f"http://127.0.0.1:{PORT}"
NAMES = ("conjuring", "conjuring-previous", "conjuring-next")
WAITING = "new hub ready, waiting for 1 active student"
PROXY_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # the build reaches the local mirror through it, as in the other daemon tests


@pytest.fixture
def box(tmp_path):
    require_docker()
    subprocess.run([DOCKER, "rm", "-f", *NAMES], capture_output=True)
    daemon = Daemon(tmp_path, args=["--hub", "docker", "--network", "none", "--usb", "none"])
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text(f"[hub]\nport = {PORT}\nhealth_timeout = 150\n")
    (daemon.custom / "srv").mkdir(parents=True)
    (daemon.custom / "users.csv").write_text("name,password,admin\nana,ana-pass-2026,\nteach,teach-pass-2026,yes\n")
    (daemon.custom / "srv" / "jupyterhub_config.py").write_text("# lesson 1\n")
    if PROXY_CA.exists():
        (daemon.custom / "certs").mkdir()
        (daemon.custom / "certs" / "host-ca.crt").write_bytes(PROXY_CA.read_bytes())
    yield daemon
    daemon.close()
    subprocess.run([DOCKER, "rm", "-f", *NAMES], capture_output=True)


def test_a_requirement_added_mid_lesson_waits_for_conjuringctl_switch(box):
    box.start()
    box.wait_status(lambda s: s.get("phase", "").startswith("serving 2 users"), timeout=900)
    ana = login("ana", "ana-pass-2026", BASE)
    kernel = start_kernel(ana, "ana")
    execute(ana, "ana", kernel, "kept = 6 * 7")

    (box.custom / "requirements.txt").write_text("tabulate\n")
    status = box.wait_status(lambda s: s.get("phase") == WAITING, timeout=900)
    assert status["switch_waiting"] == WAITING and status["converged"] is False
    assert health(f"http://127.0.0.1:{PORT + 1}")  # the new hub answers beside the serving one
    assert execute(ana, "ana", kernel, "print(kept)").strip() == "42"
    shown = box.ctl("status").stdout
    assert f"switch:   {WAITING}" in shown, shown

    assert box.ctl("switch").returncode == 0
    box.wait_status(lambda s: s.get("phase", "").startswith("serving 2 users"), timeout=600)
    assert box.state()["switch_requested"] is False
    ana = login("ana", "ana-pass-2026", BASE)
    kernel = start_kernel(ana, "ana")
    out = execute(ana, "ana", kernel, "import tabulate; print(tabulate.__name__)", timeout=120)
    assert out.strip() == "tabulate", container_logs(40, "conjuring")
