"""A SIGKILL of the real conjuringd in the middle of a hub replacement, with the real dockerd.

The daemon is killed right after it created the new container, before its health
check. The next daemon health-checks that container and keeps it when it answers;
when it cannot start, the previous hub comes back and the failure is recorded
(not retried until the inputs change).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from conjuringd.adapters.hub_http import HubSession, health
from conjuringd.store import config_digest
from tests.support.daemon import Daemon
from tests.support.docker import DOCKER, require_docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PORT = 18991
BASE = f"http://127.0.0.1:{PORT}"
PROXY_CA = Path("/etc/ssl/certs/ca-certificates.crt")
NAMES = ("conjuring", "conjuring-previous")  # the daemon's own hub names


def _custom(folder: Path) -> None:
    """A small class: no apt or pip layers, so the image is the one the hub tests build."""
    (folder / "srv").mkdir(parents=True)
    (folder / "users.csv").write_text("name,password,admin\nana,ana-pass-2026,\nteach,teach-pass-2026,yes\n")
    (folder / "srv" / "jupyterhub_config.py").write_text("# lesson 1\n")
    if PROXY_CA.exists():
        (folder / "certs").mkdir()
        (folder / "certs" / "host-ca.crt").write_bytes(PROXY_CA.read_bytes())


def _container(name: str) -> str:
    done = subprocess.run([DOCKER, "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True)
    return done.stdout.strip()


def _checked(daemon: Daemon, container_id: str) -> bool:
    try:
        applied = json.loads((daemon.state_dir / "hub" / "applied.json").read_text())
    except FileNotFoundError:
        return False
    return applied.get(container_id, {}).get("checked") is True


def _wait_phase(daemon: Daemon, config: str, prefix: str, timeout: float) -> dict:
    return daemon.wait_status(lambda s: s.get("active_config") == config and s.get("phase", "").startswith(prefix),
                              timeout=timeout)


def _kill_after_create(daemon: Daemon, count: int) -> None:
    """SIGKILL the daemon as soon as it logged its `count`-th new hub container (before the health check)."""
    daemon.wait_event("hub_created", count=count, timeout=300)
    daemon.proc.kill()
    daemon.proc.wait()
    assert not daemon.events("hub_replaced")[count - 1:], "killed too late: the health check had passed"


@pytest.fixture
def box(tmp_path):
    require_docker()
    subprocess.run([DOCKER, "rm", "-f", *NAMES], capture_output=True)
    (tmp_path / "box").mkdir()
    daemon = Daemon(tmp_path / "box", args=["--hub", "docker", "--network", "none", "--usb", "none"])
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text(f"[hub]\nport = {PORT}\nhealth_timeout = 150\n")
    _custom(daemon.custom)
    yield daemon
    daemon.close()
    subprocess.run([DOCKER, "rm", "-f", *NAMES], capture_output=True)


def test_sigkill_between_create_and_health_check_then_check_or_roll_back(box):
    daemon = box
    daemon.start()
    _wait_phase(daemon, config_digest(daemon.custom), "serving", timeout=1200)
    first = _container("conjuring")
    assert _checked(daemon, first)

    # A restart-class change; the daemon dies after creating its new hub.
    (daemon.custom / "srv" / "jupyterhub_config.py").write_text("# lesson 2\n")
    _kill_after_create(daemon, count=2)
    second = _container("conjuring")
    assert second and second != first and _container("conjuring-previous") == first
    assert not _checked(daemon, second), "never health-checked, and marked so"

    daemon.start()
    daemon.wait_event("hub_checked", count=1, timeout=300, container=second[:12])
    _wait_phase(daemon, config_digest(daemon.custom), "serving 2 users", timeout=120)
    assert _container("conjuring") == second and _container("conjuring-previous") == ""
    assert _checked(daemon, second)
    assert HubSession(BASE, timeout=120).login("ana", "ana-pass-2026") == 302

    # A hub that cannot start, and the daemon dies again before its health check.
    (daemon.custom / "srv" / "jupyterhub_config.py").write_text('raise RuntimeError("this hub cannot start")\n')
    _kill_after_create(daemon, count=3)
    third = _container("conjuring")
    assert third not in ("", second) and not _checked(daemon, third)

    started = time.monotonic()
    daemon.start()
    daemon.wait_event("hub_unhealthy_rolled_back", count=1, timeout=300)
    status = _wait_phase(daemon, config_digest(daemon.custom), "serving the previous hub", timeout=120)
    assert "failed to build or start" in status["last_error"]
    assert _container("conjuring") == second, "the previous hub is back under its name"
    assert _container(third) == "", "the hub that could not start is gone"
    assert health(BASE) and HubSession(BASE, timeout=120).login("ana", "ana-pass-2026") == 302
    failed = daemon.state()["failed_builds"]
    assert any("interrupted replacement" in entry["step"] for entry in failed.values()), failed
    print(f"\nroll back after restart: {time.monotonic() - started:.1f} s")

    # Not retried: another pass leaves the previous hub alone.
    passes = len(daemon.events("pass_start"))
    assert daemon.ctl("wake").returncode == 0  # a wake-up that is not a change of the inputs
    daemon.wait_event("pass_start", count=passes + 1, timeout=60)
    time.sleep(3)
    assert not daemon.events("hub_created")[3:], "a hub that cannot start is not retried"
    assert _container("conjuring") == second
