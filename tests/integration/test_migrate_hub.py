"""An original Conjuring box, taken over with the real `conjuringctl migrate`, then served by the real
hub container: each student logs in and finds their files, owned by them, and nobody else's.

The installation is written here as the original left it: a checkout holding custom/ (users.csv,
shared/, home_default/) and custom/home/<user>/ owned by the UIDs its csv2useradd.sh gave
(useradd -K UID_MIN=2000, users.csv order; group "conjuring"), homes 0755 as useradd made them.
This box already knew one student under another UID, so the original's UIDs and the box's collide:
the mapping has to go by name. The hub runs under its own name and port (no lock needed)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conjuringd.config.load import load_custom
from conjuringd.config.model import HubSettings
from conjuringd.uids import UidMap
from tests.support.docker import DOCKER, require_docker
from tests.support.hubconfig import PROXY_CA
from tests.support.hubworld import World, container_logs, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute
from tests.support.udev import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-migratetest", 18997
BASE = f"http://127.0.0.1:{PORT}"
STUDENTS = {"ana": ("ana-pw-2468", 2000), "ben": ("ben-pw-1357", 2001), "teacher": ("teach-pw-9999", 2002)}


def original_installation(root: Path) -> Path:
    custom = root / "custom"
    (custom / "shared").mkdir(parents=True)
    (custom / "home_default").mkdir()
    (custom / "shared" / "syllabus.txt").write_text("week 1: rasters\n")
    (custom / "home_default" / "README.md").write_text("welcome\n")
    rows = "".join(f"{name},{pw},{'yes' if name == 'teacher' else ''}\n" for name, (pw, _) in STUDENTS.items())
    (custom / "users.csv").write_text("username,password,admin\n" + rows)
    for name, (_, uid) in STUDENTS.items():
        home = custom / "home" / name
        (home / "coursework").mkdir(parents=True)
        (home / "coursework" / "essay.md").write_text(f"{name} wrote this on the old box\n")
        (home / ".bashrc").write_text(f"# {name}'s own\n")
        (home / "shared").symlink_to("/shared")
        for path in (home, home / "coursework", home / "coursework" / "essay.md", home / ".bashrc", home / "shared"):
            os.lchown(path, uid, 1000)
        home.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def box():
    require_docker()
    remove_hub_containers(NAME)
    root = Path(tempfile.mkdtemp(prefix="conj-migrate-"))
    source = original_installation(root / "conjuring")
    state = root / "state"
    UidMap(state / "uids.json").assign(["ben"])  # this box met ben first: 2000 here is ben, not ana
    done = subprocess.run([sys.executable, "-m", "conjuringd.ctl", "--state-dir", str(state), "--config-dir",
                           str(root / "etc"), "--runtime-dir", str(root / "run"), "migrate", str(source)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done
    world = World(root, name=NAME, port=PORT)
    config, problems = load_custom(root / "etc" / "custom")
    assert config is not None, problems
    certs = (("host-ca.crt", PROXY_CA.read_bytes()),) if PROXY_CA.exists() else ()
    hub = HubSettings(port=PORT, health_timeout=150, idle_timeout=600)
    world.config = dataclasses.replace(config, certs=certs, settings=dataclasses.replace(config.settings, hub=hub))
    asyncio.run(world.converge())
    yield {"root": root, "report": done.stdout}
    asyncio.run(world.hub.close())
    remove_hub_containers(NAME)
    shutil.rmtree(root)


def in_hub(*argv: str) -> str:
    return subprocess.run([DOCKER, "exec", NAME, *argv], capture_output=True, text=True, check=True).stdout.strip()


def test_migrate_reports_the_uid_of_each_home_on_both_boxes(box):
    for line in ("home ana: UID 2000 -> 2001", "home ben: UID 2001 -> 2000", "home teacher: UID 2002 -> 2002",
                 "files: imported 9, identical 0, kept newer 0, skipped 0"):
        assert line in box["report"], box["report"]
    essay = box["root"] / "conjuring" / "custom" / "home" / "ana" / "coursework" / "essay.md"
    assert os.stat(essay).st_uid == 2000, "the original installation is left as it was"


def test_each_student_logs_in_and_finds_their_own_files(box):
    for name, (password, _) in STUDENTS.items():
        session = login(name, password, BASE)
        assert session.wait_lab(name, 240) == 200, container_logs(40, NAME)
        status, _, body = session.request("GET", f"/user/{name}/api/contents/coursework/essay.md?content=1")
        assert status == 200, body[:300]
        assert json.loads(body)["content"] == f"{name} wrote this on the old box\n"
        status, _, body = session.request("GET", f"/user/{name}/api/contents/shared/syllabus.txt?content=1")
        assert status == 200 and json.loads(body)["content"] == "week 1: rasters\n", body[:300]
        uid = in_hub("id", "-u", name)
        assert in_hub("stat", "-c", "%u:%g %a", f"/home/{name}", f"/home/{name}/coursework/essay.md").split("\n") == [
            f"{uid}:{uid} 750", f"{uid}:{uid} 644"]
        assert int(uid) == UidMap(box["root"] / "state" / "uids.json").known()[name]


def test_a_student_cannot_read_another_students_migrated_home(box):
    session = login("ana", STUDENTS["ana"][0], BASE)
    kernel = start_kernel(session, "ana")
    code = """import json, os
out = {}
for path in ('/home/ben', '/home/ben/coursework/essay.md', '/home/ana/coursework/essay.md'):
    try:
        out[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
    except OSError as exc:
        out[path] = type(exc).__name__
print(json.dumps(out))"""
    seen = json.loads(execute(session, "ana", kernel, code))
    assert seen["/home/ana/coursework/essay.md"] == "ana wrote this on the old box\n"
    assert seen["/home/ben"] == "PermissionError" and seen["/home/ben/coursework/essay.md"] == "PermissionError", seen
