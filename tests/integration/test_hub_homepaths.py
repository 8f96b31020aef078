"""A forked server and kernel see the student's own home, exactly as ones started without the fork server.

The fork server imports Jupyter as root; values computed from HOME at import
(LabApp's workspaces folder, pip's user site, the trash...) must be the
student's in every forked child (conjuring_homepaths). In the real hub
container, alice's server and kernel are forked and bob's are started the usual
way (the fork server's socket moved away); the kernels report every HOME-derived
path (tests/support/homeprobe.py) and the servers are asked to write each kind
of state a student's JupyterLab writes. Everything must be the same, path by path.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from tests.integration.test_hub_forkserver import SOCKET, forkserver_pid, processes, sh
from tests.support.docker import require_docker
from tests.support.hubworld import World, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROBE = (Path(__file__).parent.parent / "support" / "homeprobe.py").read_text()
THEMES = "@jupyterlab/apputils-extension:themes"


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    """{"forked": (session, name, kernel), "usual": ...}: alice from the fork server, bob without it."""
    require_docker()
    remove_hub_containers()
    world = World(tmp_path_factory.mktemp("homepaths"))
    asyncio.run(world.converge())
    alice = login("alice", "alice-pw-1")
    found = {"forked": (alice, "alice", start_kernel(alice, "alice"))}
    sh("mv", SOCKET, "/run/forkserver-away.sock")
    try:
        bob = login("bob", "bob-pw-1")
        found["usual"] = (bob, "bob", start_kernel(bob, "bob"))
    finally:
        sh("mv", "/run/forkserver-away.sock", SOCKET)
    yield found
    asyncio.run(world.hub.close())
    remove_hub_containers()


def test_the_forked_student_and_the_usual_one_are_started_as_intended(students):
    parent = forkserver_pid()
    ppids = {p["user"]: set() for p in processes()}
    for p in processes():
        ppids[p["user"]].add(p["ppid"])
    assert ppids["alice"] == {parent}  # her server and kernel are children of the fork server
    assert parent not in ppids["bob"]


def probe(student) -> dict:
    session, name, kernel = student
    return json.loads(execute(session, name, kernel, PROBE))


def test_every_home_derived_path_of_a_forked_kernel_is_as_in_a_usual_one(students):
    forked, usual = probe(students["forked"]), probe(students["usual"])
    assert forked["expanduser"] == "~" and forked["jupyter"][0] == "~/.jupyter"
    assert not forked["root_strings"], forked["root_strings"]  # nothing anywhere names root's home
    for key in usual:
        assert forked[key] == usual[key], key


def server_state(student) -> dict:
    """Ask the student's server to write what JupyterLab writes; return the answers and where it all went."""
    session, name, kernel = student
    base = f"/user/{name}"
    _, _, page = session.request("GET", f"{base}/lab")
    config = json.loads(re.search(rb'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))
    home = f"/home/{name}"
    answers = {
        "page_dirs": {k: str(v).replace(home, "~") for k, v in config.items() if k.endswith("Dir")},
        "put_workspace": session.request("PUT", f"{base}/lab/api/workspaces/default",
                                         {"data": {"probe": 1}, "metadata": {"id": "default"}})[0],
        "get_workspace": session.request("GET", f"{base}/lab/api/workspaces/default")[0],
        "put_settings": session.request("PUT", f"{base}/lab/api/settings/{THEMES}", {"raw": '{"theme-scrollbars": true}'})[0],
        "patch_config": session.request("PATCH", f"{base}/api/config/conjuring_probe", {"probe": 1})[0],
        "put_file": session.request("PUT", f"{base}/api/contents/trash-me.txt",
                                    {"type": "file", "format": "text", "content": "x"})[0],
        "delete_file": session.request("DELETE", f"{base}/api/contents/trash-me.txt")[0],
    }
    where = execute(session, name, kernel, """import glob, json, os
home = os.path.expanduser('~')
names = ['.jupyter/lab/workspaces/*', '.jupyter/lab/user-settings/@jupyterlab/apputils-extension/*',
         '.jupyter/nbconfig/*', '.local/share/Trash/files/*']
found = {n: sorted(p.replace(home, '~') for p in glob.glob(os.path.join(home, n))) for n in names}
found['runtime'] = sorted(os.path.basename(p).split('-')[0] for p in glob.glob(os.environ['JUPYTER_RUNTIME_DIR'] + '/jpserver-*'))
print(json.dumps(found))""")
    return {**answers, **json.loads(where)}


def test_a_forked_server_saves_the_lab_layout_settings_and_config_in_the_students_home(students):
    forked, usual = server_state(students["forked"]), server_state(students["usual"])
    for key in ("put_workspace", "get_workspace", "put_settings", "patch_config", "put_file", "delete_file"):
        assert 200 <= forked[key] < 300, (key, forked[key])
    assert forked["page_dirs"]["workspacesDir"] == "~/.jupyter/lab/workspaces" and forked[".jupyter/lab/workspaces/*"]
    for key in usual:
        assert forked[key] == usual[key], key
