"""conjuringctl export z2jh end to end on the real dockerd: the exported image built, a server started
from it as the chart's spawner starts it, a student logged in through a hub with the exported
authenticator, a cell run (tests/support/z2jh.py says what stands in for Kubernetes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conjuringd.adapters.hub_http import HubSession, health
from tests.support.docker import BASE_TAG, require_docker
from tests.support.hubconfig import PROXY_CA
from tests.support.kernel import execute
from tests.support.z2jh import Kubelet, docker, hub_image, start_hub

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = "conjuring-z2jh"
HUB, NETWORK, PORT = f"{PREFIX}-hub", f"{PREFIX}-net", 18987
BASE = f"http://127.0.0.1:{PORT}"
IMAGE = "conjuring-z2jh-test/singleuser"


def write_custom(root: Path) -> Path:
    custom = root / "custom"
    (custom / "shared" / "week1").mkdir(parents=True)
    (custom / "home_default").mkdir()
    (custom / "certs").mkdir()
    (custom / "shared" / "week1" / "notes.txt").write_text("week 1 notes\n")
    (custom / "home_default" / "README.md").write_text("welcome to the course\n")
    if PROXY_CA.exists():  # this machine's TLS proxy, as the hub tests give it
        shutil.copyfile(PROXY_CA, custom / "certs" / "host-ca.crt")
    (custom / "base.Dockerfile").write_text(f"FROM {BASE_TAG}\n")
    (custom / "apt.txt").write_text("less\n")
    (custom / "users.csv").write_text("username,password,admin\nalice,alice-pw-1,no\nbob,(generated),no\n"
                                      "teacher,teacher-pw-1,yes\n")
    (custom / "conjuring.toml").write_text('[hub]\nmem_limit = "768m"\ncpu_limit = 1.5\nidle_timeout = 1200\n')
    return custom


def cleanup() -> None:
    out = docker("ps", "-aq", "--filter", f"name=^{PREFIX}-", check=False).stdout.split()
    if out:
        docker("rm", "-f", *out, check=False)
    docker("network", "rm", NETWORK, check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_docker()
    cleanup()
    root = tmp_path_factory.mktemp("z2jh")
    outdir = root / "out"
    done = subprocess.run([sys.executable, "-m", "conjuringd.ctl", "--state-dir", str(root / "state"), "export",
                           "z2jh", str(write_custom(root)), str(outdir), "--image", IMAGE],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    values = yaml.safe_load((outdir / "values.yaml").read_text())
    image = f"{IMAGE}:{values['singleuser']['image']['tag']}"
    started = time.monotonic()
    build = docker("build", "-t", image, str(outdir / "image"), check=False)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    hub_image(image, f"{IMAGE}-hub:{values['singleuser']['image']['tag']}")
    print(f"\nimages built in {time.monotonic() - started:.0f}s")
    docker("network", "create", NETWORK)
    kubelet = Kubelet(root, PREFIX, NETWORK, values)
    start_hub(root, HUB, NETWORK, f"{IMAGE}-hub:{values['singleuser']['image']['tag']}", PORT, outdir)
    kubelet.start()
    deadline = time.monotonic() + 90
    while not health(BASE) and time.monotonic() < deadline:
        time.sleep(1)
    assert health(BASE), docker("logs", HUB, check=False).stderr[-3000:]
    yield root, outdir, values, kubelet
    kubelet.done.set()
    cleanup()


def test_a_student_logs_in_and_runs_a_cell_in_a_server_started_as_the_chart_starts_it(cluster):
    root, outdir, values, kubelet = cluster
    assert HubSession(BASE).login("alice", "wrong") == 403
    alice = HubSession(BASE, timeout=60)
    assert alice.login("alice", "alice-pw-1") == 302
    started = time.monotonic()
    assert alice.wait_lab("alice", 240) == 200, (kubelet.errors, docker("logs", HUB, check=False).stderr[-3000:])
    print(f"alice's server answered in {time.monotonic() - started:.1f}s")
    # the pod's command and environment, as KubeSpawner builds them from the chart's values
    spec = kubelet.started["alice"]
    assert spec["args"][0] == "jupyterhub-singleuser"
    env = spec["env"]
    assert env["JUPYTERHUB_USER"] == "alice" and env["JUPYTERHUB_API_TOKEN"]
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8888/user/alice/"
    assert env["JUPYTERHUB_API_URL"] == f"http://{HUB}:8081/hub/api"
    assert env["MEM_LIMIT"] == str(768 * 1024**2) and env["CPU_LIMIT"] == "1.5"
    status, _, body = alice.request("POST", "/user/alice/api/kernels", {"name": "python3"})
    assert status == 201, (body[:300], [c.name + "@" + c.path for c in alice.cookies],
                           docker("logs", f"{PREFIX}-alice", check=False).stderr[-4000:])
    code = ("import os, pathlib; print(os.getuid(), os.getgid(), os.getcwd());"
            "print(open('/shared/week1/notes.txt').read().strip());"
            "print(pathlib.Path('README.md').read_text().strip(), os.path.realpath('shared'));"
            "print(os.access('/shared/week1/notes.txt', os.W_OK), os.access('/shared', os.W_OK));"
            "pathlib.Path('mine.txt').write_text('hello')")
    out = execute(alice, "alice", json.loads(body)["id"], code, timeout=120).splitlines()
    assert out == ["1000 100 /home/jovyan", "week 1 notes", "welcome to the course /shared", "False False"]
    home = root / "homes" / "alice"
    assert (home / "mine.txt").read_text() == "hello" and (home / ".conjuring-seeded").exists()
    assert (home / "mine.txt").stat().st_uid == 1000


def test_the_generated_password_and_the_secret_carry_the_logins(cluster):
    _, outdir, _, _ = cluster
    name, password = (outdir / "generated-passwords.txt").read_text().split()
    assert name == "bob" and HubSession(BASE).login("bob", password) == 302
    assert HubSession(BASE).login("bob", "") == 403
    assert HubSession(BASE).login("mallory", "alice-pw-1") == 403
    text = (outdir / "values.yaml").read_text()
    assert "alice-pw-1" not in text and password not in text and "teacher-pw-1" not in text


def test_the_home_persists_and_is_seeded_once(cluster):
    root, _, _, kubelet = cluster
    alice = HubSession(BASE, timeout=60)
    assert alice.login("alice", "alice-pw-1") == 302
    assert alice.wait_lab("alice", 120) == 200
    status, _, _ = alice.request("DELETE", "/user/alice/api/contents/README.md")
    assert status == 204
    status, _, _ = alice.request("DELETE", "/hub/api/users/alice/server")
    assert status in (202, 204)
    deadline = time.monotonic() + 60
    while docker("ps", "-q", "--filter", f"name=^{PREFIX}-alice$").stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not docker("ps", "-q", "--filter", f"name=^{PREFIX}-alice$").stdout.strip()
    assert alice.wait_lab("alice", 120) == 200, kubelet.errors  # a new container on the same volume
    home = root / "homes" / "alice"
    assert (home / "mine.txt").read_text() == "hello" and not (home / "README.md").exists()
