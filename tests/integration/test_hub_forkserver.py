"""The hub container's fork server against a real dockerd: who gets forked, as whom, and what happens when it is gone.

Students' servers and Python kernels are forked from one pre-imported process
(conjuring_forkserver); these tests look at the real processes inside the
container: their parent, account, environment and command line; a student
asking for more than their own kernel; a kernel outliving its server; and the
fork server missing or restarting while the class carries on.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time

import pytest

from conjuringd.adapters.hub_http import HubSession
from tests.support.docker import DOCKER, require_docker
from tests.support.hubworld import NAME, World, container_logs, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SOCKET = "/run/conjuring-forkserver.sock"
PYTHON = "/opt/conjuring/venv/bin/python"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers()
    w = World(tmp_path_factory.mktemp("forkserver"))
    asyncio.run(w.converge())
    yield w
    asyncio.run(w.hub.close())
    remove_hub_containers()


def sh(*args: str, user: str = "root", check: bool = True) -> str:
    run = subprocess.run([DOCKER, "exec", "-u", user, NAME, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def processes() -> list[dict]:
    found = []
    for row in sh("ps", "-eo", "pid=,ppid=,user=,args=").splitlines():
        pid, ppid, user, args = row.split(None, 3)
        found.append({"pid": int(pid), "ppid": int(ppid), "user": user, "args": args})
    return found


def forkserver_pid() -> int:
    found = [p["pid"] for p in processes() if p["args"].endswith("-m conjuring_forkserver") and p["user"] == "root"]
    assert len(found) == 1, processes()
    return found[0]


def wait_for(predicate, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def student(name: str, password: str) -> tuple[HubSession, str]:
    session = login(name, password)
    return session, start_kernel(session, name)


def test_server_and_kernel_are_forked_as_the_student_with_only_their_own_environment(world):
    parent = forkserver_pid()
    world.alice, world.alice_kernel = student("alice", "alice-pw-1")
    code = ("import os, json; print(json.dumps({'uid': os.getuid(), 'ppid': os.getppid(), 'home': os.environ['HOME'], "
            "'cwd': os.getcwd(), 'environ': open('/proc/self/environ', 'rb').read().strip(b'\\0').decode(), "
            "'cmdline': open('/proc/self/cmdline', 'rb').read().decode(), 'nice': os.nice(0), 'token': "
            "'JUPYTERHUB_API_TOKEN' in os.environ, 'runtime': os.environ['JUPYTER_RUNTIME_DIR'], "
            "'transport': json.load(open(os.environ['JUPYTER_RUNTIME_DIR'] + '/kernel-%s.json' % KERNEL)).get('transport')}))")
    seen = json.loads(execute(world.alice, "alice", world.alice_kernel, code.replace("KERNEL", repr(world.alice_kernel))))
    uids = json.loads((world.hub.paths.state_dir / "uids.json").read_text())["users"]
    assert seen["uid"] == uids["alice"] and seen["ppid"] == parent
    assert seen["home"] == "/home/alice" and seen["cwd"] == "/home/alice"
    assert "TITLE_ROOM" not in seen["environ"] and "PATH=" not in seen["environ"]  # the fork server's start-up environment is not shown
    assert "ipykernel_launcher" in seen["cmdline"] and seen["nice"] == 5
    assert seen["token"]  # the kernel has the environment its server gave it
    server = [p for p in processes() if p["user"] == "alice" and "jupyterhub-singleuser" in p["args"]]
    assert len(server) == 1 and server[0]["ppid"] == parent
    # her first kernel was started with her server, before she asked for it (conjuring_spare)
    assert f"Kernel {world.alice_kernel} (started in advance) handed to the first request" in container_logs(2000)
    assert seen["runtime"] == f"/run/user/{seen['uid']}" and seen["transport"] == "ipc"
    # her server serves on a socket the fork server bound for it, below 1024, where no student can listen
    port = int(re.search(r"Forked the server of alice from the fork server: pid \d+, port (\d+)", container_logs()).group(1))
    assert 200 <= port < 1024
    bind = f"import socket; socket.socket().bind(('127.0.0.1', {port - 1}))"
    assert "PermissionError" in execute(world.alice, "alice", world.alice_kernel, f"try:\n {bind}\nexcept OSError as e: print(type(e).__name__)")


def test_a_student_gets_only_their_own_kernels_from_the_fork_server(world):
    script = f"""
import conjuring_forkclient as f, os, socket, sys, time
null = os.open(os.devnull, os.O_RDWR)
silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
silent.connect(f.SOCKET)  # connects and says nothing: must not hold up anyone else
try:
    f.spawn("server", ["jupyterhub-singleuser"], {{}}, "/", (null, null, null), user="bob")
    print("started server")
except RuntimeError as exc:
    print("refused server", exc)
err_r, err_w = os.pipe()  # a kernel request for /bin/sh: forked, but the child (alice already) runs nothing
proc = f.spawn("kernel", ["/bin/sh", "-c", "id"], {{}}, "/", (null, null, err_w), user="root")
os.close(err_w)
print("kernel", proc.wait(10), os.read(err_r, 4096).decode().strip())
asked = time.monotonic()
proc = f.spawn("kernel", [sys.executable, "-m", "ipykernel_launcher", "-f", "/tmp/k-alice.json"], {{"HOME": "/home/alice"}},
               "/home/alice", (null, null, null), user="root")
print("answered in", round(time.monotonic() - asked, 2), flush=True)
for _ in range(50):  # the pid comes back at once; the child drops to the caller's account right after
    uid = open(f"/proc/{{proc.pid}}/status").read().split("Uid:")[1].split()[0]
    if uid != "0":
        break
    time.sleep(0.1)
print("kernel", proc.pid, uid, flush=True)
"""
    lines = sh(PYTHON, "-c", script, user="alice").splitlines()
    assert lines[0] == "refused server fork server refused server: only the hub starts servers"
    assert lines[1].startswith("kernel 126 conjuring-forkserver child: not this Python's ipykernel"), lines
    assert float(lines[2].split()[-1]) < 1.0  # not held up by the silent connection
    _, pid, uid = lines[3].split()
    assert int(uid) == json.loads((world.hub.paths.state_dir / "uids.json").read_text())["users"]["alice"]
    # the asking process has exited: its lifeline closed, so the kernel it asked for ends too
    wait_for(lambda: subprocess.run([DOCKER, "exec", NAME, "kill", "-0", pid], capture_output=True).returncode != 0,
             what="the orphaned kernel to exit")


def test_a_kernel_ends_when_its_server_is_killed(world):
    bob, _ = student("bob", "bob-pw-1")
    kernels = [p for p in processes() if p["user"] == "bob" and "ipykernel_launcher" in p["args"]]
    server = [p for p in processes() if p["user"] == "bob" and "jupyterhub-singleuser" in p["args"]]
    assert len(kernels) == 1 and len(server) == 1
    sh("kill", "-9", str(server[0]["pid"]))
    wait_for(lambda: not [p for p in processes() if p["user"] == "bob"], what="bob's kernel to end with his server")


def test_without_the_fork_server_servers_start_the_usual_way_and_it_comes_back(world):
    old = forkserver_pid()
    sh("mv", SOCKET, "/run/forkserver-away.sock")
    try:
        session, kernel = student("teacher", "teacher-pw-1")
        assert execute(session, "teacher", kernel, "print(6 * 7)").strip() == "42"
        started = [p for p in processes() if p["user"] == "teacher"]
        assert started and all(p["ppid"] != old for p in started)  # a child of the hub, not of the fork server
    finally:
        sh("mv", "/run/forkserver-away.sock", SOCKET)
    sh("kill", str(old))  # it restarts by itself and listens again; alice's server and kernel keep running
    wait_for(lambda: [p for p in processes() if p["args"].endswith("-m conjuring_forkserver") and p["pid"] != old],
             what="a new fork server")
    wait_for(lambda: container_logs().count("conjuring-forkserver: ready on") == 2, what="the new fork server to be ready")
    assert execute(world.alice, "alice", world.alice_kernel, "print('still here')").strip() == "still here"
    status, _, body = world.alice.request("POST", "/user/alice/api/kernels", {"name": "python3"})
    assert status == 201, body[:300]
    kernel = json.loads(body)["id"]  # alice's server outlived the old fork server; her new kernel comes from the new one
    assert int(execute(world.alice, "alice", kernel, "import os; print(os.getppid())")) == forkserver_pid()
