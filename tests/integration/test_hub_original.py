"""Coming from Conjuring against a real dockerd: all of srv/ in the hub's working folder, the original's
shm_size, and a base whose Python is too old (issue 13, items 5-7).

One hub of its own (container name and port below, no lock needed against the other hub tests),
built once; the tests run in order on it as a teacher's changes would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess

import pytest

from conjuringd.adapters.hub_http import health
from conjuringd.config.bases import MARKER
from conjuringd.config.problems import BuildFailed
from conjuringd.reconcile.model import BuildImage, ReplaceContainer
from tests.support.docker import DOCKER, require_docker
from tests.support.hubconfig import replace, tree
from tests.support.hubworld import World, container_logs, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute
from tests.support.oldbase import UNKNOWN_OLD, ensure_standin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-hubtest-original", 18993
BASE = f"http://127.0.0.1:{PORT}"
KEY = "-----BEGIN PRIVATE KEY-----\nnot a real key, but secret\n-----END PRIVATE KEY-----\n"
# the original's commented SSL recipe reads the key from the hub's working folder: this one insists it is there
HUB_CONFIG = b"assert open('/srv/jupyterhub/my.key').read().startswith('-----BEGIN PRIVATE KEY-----')\n"


def in_hub(*command: str, user: str = "root") -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, "exec", "-u", user, NAME, *command], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers(NAME)
    w = World(tmp_path_factory.mktemp("original"), name=NAME, port=PORT, hub_config=HUB_CONFIG)
    srv = w.cfg / "srv"
    (srv / "extra").mkdir(parents=True)
    (srv / "my.key").write_text(KEY)
    (srv / "extra" / "notes.txt").write_text("teacher only\n")
    (srv / "jupyterhub_config.py").write_bytes(HUB_CONFIG)
    settings = w.config.settings
    w.config = replace(w.config, srv=tree(srv),
                       settings=dataclasses.replace(settings, hub=dataclasses.replace(settings.hub, shm_size="1g")))
    yield w
    asyncio.run(w.hub.close())
    remove_hub_containers(NAME)


async def test_all_of_srv_is_in_the_working_folder_root_only_and_the_hub_config_reads_it(world):
    done = await world.converge()
    assert done[-1] is ReplaceContainer, done
    assert health(BASE)
    listing = in_hub("stat", "-c", "%n %a %U %G", "/srv/jupyterhub", "/srv/jupyterhub/my.key",
                     "/srv/jupyterhub/extra", "/srv/jupyterhub/extra/notes.txt").stdout.split("\n")
    assert listing[:4] == ["/srv/jupyterhub 700 root root", "/srv/jupyterhub/my.key 600 root root",
                           "/srv/jupyterhub/extra 700 root root", "/srv/jupyterhub/extra/notes.txt 600 root root"]
    assert in_hub("cat", "/srv/jupyterhub/my.key").stdout == KEY


async def test_a_student_cannot_read_the_key_by_any_path_they_have(world):
    alice = login("alice", "alice-pw-1", BASE)
    kernel = start_kernel(alice, "alice")
    out = execute(alice, "alice", kernel, """
import os, glob
tries = {}
for path in ('/srv/jupyterhub/my.key', '/srv/jupyterhub/extra/notes.txt', '/run/conjuring/hub/srv/my.key'):
    try:
        tries[path] = open(path).read()
    except OSError as exc:
        tries[path] = type(exc).__name__
try:
    tries['listing'] = os.listdir('/srv/jupyterhub')
except OSError as exc:
    tries['listing'] = type(exc).__name__
tries['found'] = [p for top in ('/srv', '/run', '/home', '/tmp', '/opt', '/etc', '/var', '/shared')
                  for p in glob.glob(top + '/**/my.key', recursive=True)]
print(__import__('json').dumps(tries))
""", timeout=120)
    tries = json.loads(out)
    assert tries == {"/srv/jupyterhub/my.key": "PermissionError", "/srv/jupyterhub/extra/notes.txt": "PermissionError",
                     "/run/conjuring/hub/srv/my.key": "PermissionError", "listing": "PermissionError", "found": []}, tries
    shell = in_hub("cat", "/srv/jupyterhub/my.key", user="alice")
    assert shell.returncode != 0 and "Permission denied" in shell.stderr and "secret" not in shell.stdout


async def test_the_original_shm_size_reaches_the_container(world):
    inspect = json.loads(subprocess.run([DOCKER, "inspect", NAME], capture_output=True, text=True).stdout)[0]
    assert inspect["HostConfig"]["ShmSize"] == 1024**3
    size = in_hub("df", "-B1", "--output=size", "/dev/shm").stdout.split()[-1]
    assert int(size) == 1024**3


async def test_a_file_removed_from_srv_leaves_the_working_folder_on_restart(world):
    (world.cfg / "srv" / "extra" / "notes.txt").unlink()
    world.config = replace(world.config, srv=tree(world.cfg / "srv"))
    assert await world.converge() == [ReplaceContainer]
    assert in_hub("test", "-e", "/srv/jupyterhub/extra/notes.txt").returncode == 1
    assert in_hub("test", "-f", "/srv/jupyterhub/my.key").returncode == 0
    assert in_hub("test", "-f", "/srv/jupyterhub/jupyterhub.sqlite").returncode == 0, "the hub's own state stays"


async def test_a_base_with_too_old_a_python_fails_its_first_step_with_one_line_and_the_old_hub_serves(world):
    ensure_standin()  # a stand-in for ubuntu:18.04's Python 3.6 (tests/support/oldbase.py)
    before = json.loads(subprocess.run([DOCKER, "inspect", NAME], capture_output=True, text=True).stdout)[0]["Id"]
    good = world.config
    world.config = replace(good, base_dockerfile=f"FROM {UNKNOWN_OLD}\n".encode(), base_image=UNKNOWN_OLD)
    with pytest.raises(BuildFailed) as failed:
        await world.converge(allow={BuildImage})
    line = (f"base image {UNKNOWN_OLD} has Python 3.6, but the hub needs Python 3.9 or newer: use FROM "
            'debian:bookworm in base.Dockerfile (or [hub] base_image = "debian:bookworm")')
    print(failed.value.step)
    assert failed.value.log_tail == (line,)
    assert failed.value.step.endswith(f"(base): {line}") and MARKER not in failed.value.step
    observed = await world.hub.observe()
    assert observed.container.id == before and observed.container.running
    assert health(BASE)
    login("bob", "bob-pw-1", BASE)
    world.config = good
    assert not container_logs(5, NAME).count("Traceback")
