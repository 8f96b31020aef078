"""The corpus of sticks in the original Conjuring's formats (tests/unit/data/sticks/, described in
tests/unit/test_sticks_corpus.py) plugged one after the other into one box: the real conjuringd with
--hub docker and --usb udev, a real systemd-udevd, one ext4 loop-device stick rewritten between insertions
(as a teacher edits a stick) and the real dockerd. For each: the report's result, the merged active
configuration, the hub serving it, and a student of that users.csv logging in over HTTP.

The box starts as a small class on the default base. In order, as a teacher would bring them:
  main        (the original's main branch, FROM ubuntu:18.04 / Python 3.6): the original's build failed
              deep in pip; here it is refused with one line, nothing changes, the previous hub serves on
  two-column  (its first versions' users.csv)  } users only: the running hub takes them live
  users-only                                    } (same container, no rebuild)
  shared-only (new files in shared/week2/)      } files only: live as well
  generator   (src/create_users.py's output: two columns, so its `admin` row is an ordinary student)
  newer       (its newer branch, FROM ubuntu:22.04, environment.yml + environment-geo.yml): a new image,
              laid over everything the earlier sticks left, its custom/home/ never taken
Nothing here is COMPLETE, so every stick after the first keeps what came before it (the original's cp -Ru).

STAND-INS (test-only, see their modules): the daemon runs as tests/support/standin_daemon.py, which renders
images with the micromamba stand-in (conda is unreachable here) and names the container conjuring-corpus;
`ubuntu:22.04` is bootstrapped with mmdebstrap from archive.ubuntu.com (Docker Hub is unreachable here).
Run under `flock /tmp/conj-docker.lock flock /tmp/conj-udev.lock`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conjuringd.adapters.hub_http import HubSession, health
from conjuringd.config.bases import too_old_message
from tests.support.daemon import REPO, Daemon
from tests.support.docker import DOCKER, require_docker, require_ubuntu_image
from tests.support.hubworld import remove_hub_containers
from tests.support.standin_daemon import CONTAINER_ENV
from tests.support.udev import ext4_read, loop_toml, loops, make_ext4_stick, rewrite_ext4_stick, udevd

pytestmark = [pytest.mark.docker, pytest.mark.udev, pytest.mark.slow]
__all__ = ["loops", "udevd"]

NAME, PORT = "conjuring-corpus", 18985
BASE = f"http://127.0.0.1:{PORT}"
STICKS = REPO / "tests" / "unit" / "data" / "sticks"
PROXY_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BOX_USERS = "name,password,admin\nana,ana-pass-2026,\nteach,teach-pass-2026,yes\n"
SERVING = re.compile(r"serving \d+ users? at ")  # not "serving the previous hub: the new configuration failed"
BUILD = 1500  # seconds: a cold build of a new base with two environments on a busy 2-CPU machine


def box_custom(folder: Path) -> None:
    """The box's own small class, trusting this machine's CAs (the product's certs/ feature)."""
    (folder / "srv").mkdir(parents=True)
    (folder / "shared").mkdir()
    (folder / "users.csv").write_text(BOX_USERS)
    (folder / "srv" / "jupyterhub_config.py").write_text("# the box's own\n")
    (folder / "shared" / "welcome.md").write_text("# Welcome\n")
    if PROXY_CA.exists():
        (folder / "certs").mkdir()
        shutil.copy(PROXY_CA, folder / "certs" / "host-ca.crt")


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stick_files(name: str) -> dict[str, bytes]:
    return files(STICKS / name / "conjuring" / "custom")


class Box:
    """The daemon, its one stick image and what the hub looks like from outside."""

    def __init__(self, daemon: Daemon, loops, folder: Path):
        self.daemon, self.loops, self.folder = daemon, loops, folder
        self.image = folder / "usb-corpus.img"
        self.reports = 0

    def active(self) -> dict[str, bytes]:
        return files(self.daemon.state_dir / "configs" / self.daemon.state()["active"])

    def plug(self, name: str, timeout: float = 300) -> str:
        """Write corpus stick `name` onto the stick, plug it in, wait for its report; the report's text."""
        tree = self.folder / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(STICKS / name, tree)
        if self.reports:
            rewrite_ext4_stick(self.image, tree)
        else:
            make_ext4_stick(self.image, tree)  # enrolled on first use
        self.reports += 1
        device = self.loops.attach(self.image)
        self.daemon.wait_event("report_written", count=self.reports, timeout=timeout)
        self.loops.detach(device)
        return ext4_read(self.image, "/conjuring/REPORT.txt").decode()

    def serving(self, timeout: float = 120) -> dict:
        """status.json once the hub serves the active configuration (state.json's)."""
        def active() -> str | None:
            try:
                return self.daemon.state().get("active")
            except (OSError, ValueError):  # not written yet: the daemon is starting
                return None

        return self.daemon.wait_status(
            lambda s: s.get("active_config") == active() and SERVING.match(str(s.get("phase", ""))), timeout)

    def container(self) -> tuple[str, str]:
        done = subprocess.run([DOCKER, "inspect", "-f", "{{.Id}} {{.Config.Image}}", NAME], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        ident, image = done.stdout.split()
        return ident, image


def student(name: str, password: str) -> HubSession:
    """`name` logs in over HTTP and gets their own JupyterLab."""
    session = HubSession(BASE, timeout=120)
    assert session.login(name, password) == 302, f"{name} could not log in"
    assert session.wait_lab(name, 240) == 200, f"{name}'s server did not start"
    return session


def hub_login(name: str, password: str) -> HubSession:
    """`name` logs in to the hub (no server started)."""
    session = HubSession(BASE, timeout=120)
    assert session.login(name, password) == 302, f"{name} could not log in"
    return session


def cannot_log_in(name: str, password: str) -> bool:
    return HubSession(BASE, timeout=60).login(name, password) != 302


def read(session: HubSession, user: str, path: str) -> bytes:
    status, _, body = session.request("GET", f"/user/{user}/api/contents/{path}?content=1&format=text")
    assert status == 200, (path, status, body[:300])
    return json.loads(body)["content"].encode()


def is_hub_admin(session: HubSession) -> bool:
    status, _, _ = session.request("GET", "/hub/admin", follow=False)
    assert status in (200, 403), status
    return status == 200


def run(session: HubSession, user: str, kernel: str, code: str) -> str:
    from tests.support.kernel import execute

    status, _, body = session.request("POST", f"/user/{user}/api/kernels", {"name": kernel})
    assert status == 201, body[:300]
    return execute(session, user, json.loads(body)["id"], code, timeout=180)


@pytest.fixture
def box(tmp_path, udevd, loops):
    require_docker()
    require_ubuntu_image("ubuntu:22.04")
    remove_hub_containers(NAME)
    (tmp_path / "box").mkdir()
    daemon = Daemon(tmp_path / "box", args=["--hub", "docker", "--network", "none", "--usb", "udev"],
                    module="tests.support.standin_daemon", env={CONTAINER_ENV: NAME})
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text(loop_toml(tmp_path, f"[hub]\nport = {PORT}\nhealth_timeout = 150\n"))
    box_custom(daemon.custom)
    try:
        yield Box(daemon, loops, tmp_path)
    finally:
        daemon.close()
        remove_hub_containers(NAME)


def live(box: Box, name: str, *said: str) -> None:
    """Plug corpus stick `name`: APPLIED, saying `said`, the active configuration is the previous one with the
    stick's files laid over it, and the same hub container serves it (users and files change live)."""
    before, container = box.active(), box.container()
    report = box.plug(name)
    for line in ("APPLIED - this configuration is now active", *said):
        assert line in report, (line, report)
    assert box.active() == {**before, **stick_files(name)}
    box.serving(timeout=60)
    assert box.container() == container, "users and files only: the running hub takes them live"


def refused_main_branch(box: Box) -> None:
    """The main branch's stick: refused at validation with the one line; nothing changes, the same hub serves."""
    before, container = box.active(), box.container()
    report = box.plug("main")
    assert "INVALID - not applied, the previous configuration keeps running" in report, report
    assert too_old_message("ubuntu:18.04", "3.6") in report, report
    assert "but the hub needs Python 3.9 or newer: use FROM ubuntu:22.04" in report, report
    assert box.active() == before and box.container() == container
    box.serving(timeout=10)
    hub_login("ana", "ana-pass-2026")
    assert cannot_log_in("anna", "kettle-42")  # the stick's students did not arrive


def live_sticks(box: Box) -> None:
    live(box, "two-column", "users.csv   (replaced)")
    olga = student("olga", "Birch-tree9")
    assert read(olga, "olga", "shared/welcome.md") == b"# Welcome\n"  # the box's shared/ stayed
    assert not is_hub_admin(olga)
    assert cannot_log_in("ana", "ana-pass-2026")  # users.csv was replaced as a file: ana is gone

    live(box, "users-only")  # msmith's `yes` makes an admin, the others are students
    chen = student("chen", "Copper-Kite-3")
    assert not is_hub_admin(chen) and is_hub_admin(hub_login("msmith", "Grad3-Book"))
    assert cannot_log_in("olga", "Birch-tree9")

    live(box, "shared-only", "shared/week2/exercises.md   (new)", "shared/week2/points.csv   (new)")
    assert read(chen, "chen", "shared/week2/points.csv") == b"x,y\n1,2\n3,5\n"
    assert read(chen, "chen", "shared/welcome.md") == b"# Welcome\n"
    hub_login("msmith", "Grad3-Book")  # the accounts were kept

    live(box, "generator")  # two columns: `admin` is a student named admin; the passwords as written
    admin = student("admin", "Hd7;Qe_2(zP9")
    assert not is_hub_admin(admin)
    hub_login("conjuring1", "q7Rz:w2(")
    assert read(admin, "admin", "shared/week2/exercises.md").startswith(b"# Week 2")


def newer_branch(box: Box, first: tuple[str, str]) -> None:
    """Its base and environments make a new image; its files lie over everything the earlier sticks left."""
    before = box.active()
    report = box.plug("newer", timeout=BUILD)
    assert "APPLIED - this configuration is now active" in report, report
    assert "home: student homes are never taken from a stick" in report, report
    assert "FAILED" not in report, report  # the image was built and the new hub answered
    on_stick = {rel: data for rel, data in stick_files("newer").items() if not rel.startswith("home/")}
    after = box.active()
    assert after == {**before, **on_stick}
    assert "shared/week2/points.csv" in after and "certs/host-ca.crt" in after  # kept from earlier
    box.serving(timeout=60)
    second = box.container()
    assert second[0] != first[0] and second[1] != first[1], "a new base must give a new image and container"
    jane = student("jane", "Otter-River-5")
    assert read(jane, "jane", "shared/data/rain.csv").startswith(b"year,rainfall_mm")
    assert read(jane, "jane", "shared/week2/exercises.md").startswith(b"# Week 2")
    status, _, body = jane.request("GET", "/user/jane/api/contents/notes.txt")
    assert status == 404, "custom/home/jane on the stick must not reach jane's home"
    assert cannot_log_in("admin", "Hd7;Qe_2(zP9")  # newer's users.csv replaced the generator's
    assert is_hub_admin(hub_login("lecturer", "Quiet-Harbour-22")) and not is_hub_admin(hub_login("kofi", "Maple-Sky-8"))
    status, _, body = jane.request("GET", "/user/jane/api/kernelspecs")
    assert status == 200 and set(json.loads(body)["kernelspecs"]) == {"python3", "geo"}, body[:500]
    release = run(jane, "jane", "python3", "import scipy, matplotlib; print(open('/etc/os-release').read())")
    assert 'VERSION_ID="22.04"' in release, release  # the default kernel has environment.yml, on Ubuntu 22.04
    assert run(jane, "jane", "geo", "import shapely; print(shapely.__name__)").strip() == "shapely"
    assert health(BASE)


def test_the_corpus_of_original_sticks_on_one_box_with_the_real_hub(box):
    box.daemon.start()
    box.serving(timeout=BUILD)
    student("ana", "ana-pass-2026")
    first = box.container()
    for phase in (refused_main_branch, live_sticks):
        started = time.monotonic()
        phase(box)
        print(f"{phase.__name__}: {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    newer_branch(box, first)
    print(f"newer_branch: {time.monotonic() - started:.0f} s")
