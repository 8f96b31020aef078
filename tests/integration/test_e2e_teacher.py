"""End to end, as a teacher uses the box: plug in a stick, a new student logs in and sees the new file.

The real conjuringd process, a real systemd-udevd, a loop-device stick and a real dockerd.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conjuringd.adapters.hub_http import HubSession
from conjuringd.store import config_digest
from tests.support.daemon import REPO, Daemon
from tests.support.docker import DOCKER, require_docker
from tests.support.udev import ext4_read, loop_toml, loops, make_ext4_stick, udevd

pytestmark = [pytest.mark.docker, pytest.mark.udev, pytest.mark.slow]
__all__ = ["loops", "udevd"]

PROXY_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BASE = "http://127.0.0.1:8989"


def classroom_custom(dst: Path) -> Path:
    """The shipped configuration, trusting this machine's CAs (the product's certs/ feature)."""
    shutil.copytree(REPO / "custom", dst)
    if PROXY_CA.exists():
        (dst / "certs").mkdir(exist_ok=True)
        shutil.copy(PROXY_CA, dst / "certs" / "host-ca.crt")
    return dst


def wait_serving(daemon: Daemon, config_hash: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = daemon.status()
        except (OSError, ValueError):
            status = {}
        if status.get("active_config") == config_hash and status.get("phase", "").startswith("serving"):
            return
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon died:\n{daemon.log_path.read_text()[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{config_hash[:12]} never served:\n{daemon.log_path.read_text()[-4000:]}")


@pytest.fixture
def teacher_box(tmp_path, udevd):
    require_docker()
    subprocess.run([DOCKER, "rm", "-f", "conjuring", "conjuring-previous"], capture_output=True)
    root = tmp_path / "box"
    root.mkdir()
    daemon = Daemon(root, args=["--hub", "docker", "--network", "none", "--usb", "udev"])
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text(loop_toml(tmp_path))
    classroom_custom(daemon.custom)
    yield daemon
    daemon.close()
    subprocess.run([DOCKER, "rm", "-f", "conjuring", "conjuring-previous"], capture_output=True)


def test_plug_in_a_stick_new_student_logs_in_and_sees_the_new_file(teacher_box, tmp_path, loops):
    daemon = teacher_box
    daemon.start()
    wait_serving(daemon, config_digest(daemon.custom), timeout=1200)
    hub_id = subprocess.run([DOCKER, "inspect", "-f", "{{.Id}}", "conjuring"], capture_output=True, text=True).stdout

    stick = tmp_path / "stick"
    custom = classroom_custom(stick / "conjuring" / "custom")
    with open(custom / "users.csv", "a") as users:
        users.write("newkid,kid-pass-2026,\n")
    (custom / "shared" / "lesson2.txt").write_text("Today: loops and lists\n")
    image = make_ext4_stick(tmp_path / "usb-teacher.img", stick, label="TEACHER")
    device = loops.attach(image)
    wait_serving(daemon, config_digest(custom), timeout=300)
    daemon.wait_event("report_written", timeout=120)
    loops.detach(device)

    session = HubSession(BASE)
    assert session.login("newkid", "kid-pass-2026") == 302
    assert session.wait_lab("newkid", timeout=240) == 200
    status, _, body = session.request("GET", "/user/newkid/api/contents/shared/lesson2.txt")
    assert status == 200, body[:300]
    assert b"Today: loops and lists" in body
    same_hub = subprocess.run([DOCKER, "inspect", "-f", "{{.Id}}", "conjuring"], capture_output=True, text=True).stdout
    assert same_hub == hub_id, "a new student and a new shared file must not restart the hub"

    report = ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert "applied" in report.lower(), report
    assert "http://" in report and ":8989" in report, report
