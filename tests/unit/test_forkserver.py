"""conjuring_forkserver's rules, and the real fork server loop under attack, without a hub.

The real thing in the hub container: tests/integration/test_hub_forkserver.py and test_hub_isolation.py.
Here the loop runs in a process of its own on a socket in a temporary folder, with `nobody` as the only
student; the test (root) plays the hub, and processes dropped to nobody play a hostile student.
"""

from __future__ import annotations

import array
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conjuringd.hub.dockerfile import RUNTIME_SRC

SITE = str(RUNTIME_SRC / "site")
sys.path.insert(0, SITE)
import conjuring_forkchild as forkchild  # noqa: E402
import conjuring_forkserver as forkserver  # noqa: E402

NOBODY = pwd.getpwnam("nobody")
KERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "/tmp/kernel.json"]
STUDENT = lambda account: account.pw_name == "nobody"  # noqa: E731
HEADER = lambda kind, user="": json.dumps({"kind": kind, "user": user}).encode()  # noqa: E731


def test_the_hub_gets_a_server_run_as_the_student_it_names():
    assert forkserver.decide(HEADER("server", "nobody"), 0, 0, 4, STUDENT) == ("server", NOBODY)


def test_a_kernel_runs_as_whoever_asks_whatever_user_the_header_names():
    assert forkserver.decide(HEADER("kernel", "root"), 0, NOBODY.pw_uid, 5, STUDENT) == ("kernel", NOBODY)


@pytest.mark.parametrize("data, flags, caller, fds, why", [
    (HEADER("server", "nobody"), 0, NOBODY.pw_uid, 4, "only the hub starts servers"),
    (HEADER("server", "root"), 0, 0, 4, "nothing runs as root"),
    (HEADER("server", "daemon"), 0, 0, 4, "not a student"),
    (HEADER("server", "no-such-name"), 0, 0, 4, "no such student"),
    (HEADER("kernel"), 0, 0, 5, "nothing runs as root"),
    (HEADER("kernel"), 0, pwd.getpwnam("daemon").pw_uid, 5, "not a student"),
    (HEADER("kernel"), 0, 4_000_000, 5, "no such account"),
    (HEADER("kernel"), 0, NOBODY.pw_uid, 4, "a lifeline"),
    (HEADER("server", "nobody"), 0, 0, 3, "the request pipe"),
    (HEADER("shell"), 0, 0, 4, "unknown kind"),
    (HEADER("kernel"), socket.MSG_CTRUNC, NOBODY.pw_uid, 5, "too many file descriptors"),
    (HEADER("kernel"), socket.MSG_TRUNC, NOBODY.pw_uid, 5, "too long"),
    (b"[" * 300 + b"]" * 300, 0, NOBODY.pw_uid, 5, "flat JSON object"),
    (b'{"kind": {"a": {"b": [1]}}, "x": [[]]}', 0, NOBODY.pw_uid, 5, "flat JSON object"),
    (b'"kernel"', 0, NOBODY.pw_uid, 5, "flat JSON object"),
    (b"\xff\xfe", 0, NOBODY.pw_uid, 5, "not JSON"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_requests_outside_the_rules_are_refused(data, flags, caller, fds, why):
    with pytest.raises(forkserver.Refused, match=why):
        forkserver.decide(data, flags, caller, fds, STUDENT)


@pytest.mark.parametrize("kind, argv, allowed", [
    ("server", ["/opt/conjuring/venv/bin/jupyterhub-singleuser", "--port=300"], True),
    ("server", ["/bin/sh", "-c", "id"], False),
    ("kernel", KERNEL, True),
    ("kernel", ["/bin/sh", "-m", "ipykernel_launcher"], False),
    ("kernel", ["/usr/bin/python3", "-m", "ipykernel_launcher"], sys.executable == "/usr/bin/python3"),
])
def test_the_child_runs_only_a_server_or_this_pythons_kernel(kind, argv, allowed):
    if allowed:
        forkchild.check(kind, argv)
    else:
        with pytest.raises(PermissionError):
            forkchild.check(kind, argv)


def test_a_kernel_is_this_environments_python_under_any_of_its_names():
    python3 = os.path.join(os.path.dirname(sys.executable), "python3")
    assert forkchild.same_python(sys.executable) and forkchild.same_python(python3)
    assert not forkchild.same_python("/bin/sh")


def test_a_server_port_is_a_free_one_of_the_range_chosen_from_the_uid():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    ports = range(port, port + 3)
    try:
        got = forkserver.listen_for(0, ports)  # uid 0 starts at `port`, which is taken: the next one
        assert got.getsockname()[1] == port + 1
        got.close()
    finally:
        taken.close()


def test_the_teachers_preload_comes_from_the_hub_settings(tmp_path):
    settings = tmp_path / "settings.json"
    assert forkserver.teacher_preload(str(settings)) == ()
    settings.write_text(json.dumps({"preload": ["numpy", "scipy.stats"]}))
    assert forkserver.teacher_preload(str(settings)) == ("numpy", "scipy.stats")
    settings.write_text("{not json")
    assert forkserver.teacher_preload(str(settings)) == ()


def test_a_child_shows_the_command_it_runs_in_ps():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child rewrites its own argv area, as a forked kernel does
        try:
            os.close(read)
            os.environ.clear()
            forkchild.show_as(KERNEL)
            os.write(write, Path("/proc/self/cmdline").read_bytes() + b"|" + Path("/proc/self/comm").read_bytes())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        cmdline, comm = pipe.read().split(b"|")
    os.waitpid(pid, 0)
    assert cmdline.rstrip(b"\0").startswith(" ".join(KERNEL).encode()[:40])
    assert comm.strip() == b"ipykernel_launc"


# --- the real loop, attacked ---------------------------------------------------------------------

LOOP = textwrap.dedent("""
    import os, signal, socket, sys
    sys.path.insert(0, {site!r})
    import conjuring_forkserver as f
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind({path!r}); os.chmod({path!r}, 0o666); listener.listen(64); listener.setblocking(False)
    print("ready", flush=True)
    f.Loop(listener, wake_r, is_student=lambda a: a.pw_name == "nobody", server_ports=range(20300, 20310)).run()
""")


@pytest.fixture
def server():
    folder = tempfile.mkdtemp(prefix="forkserver-")  # under /tmp, which nobody can enter (pytest's is 0700)
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "fork.sock")
    proc = subprocess.Popen([sys.executable, "-c", LOOP.format(site=SITE, path=path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    yield path, proc
    proc.kill()
    proc.wait()
    shutil.rmtree(folder)


def as_nobody(script: str, path: str, timeout: float = 60) -> str:
    """Run `script` (python, with `path` the fork server's socket) as the student nobody."""
    code = f"import array, json, os, socket, sys, time\npath = {path!r}\n" + textwrap.dedent(script)
    done = subprocess.run([sys.executable, "-c", code], user=NOBODY.pw_uid, group=NOBODY.pw_gid, extra_groups=[],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def ask(path: str, header: bytes, fds: list[int]) -> tuple[dict, list[int], socket.socket]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.settimeout(10)
    conn.connect(path)
    socket.send_fds(conn, [header], fds)
    data, got, _, _ = socket.recv_fds(conn, 4096, 1)
    return json.loads(data), got, conn


def memory_of(pid: int) -> bytes:
    found = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if "r" not in perms or line.rstrip().endswith(("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                found.append(mem.read(end - start))
            except OSError:
                continue
    return b"".join(found)


def test_the_root_process_never_holds_a_request_and_a_server_gets_a_socket_bound_for_it(server):
    path, proc = server
    secret = "token-" + os.urandom(12).hex()
    for _ in range(3):  # the hub asks for servers; each request carries a token only its child may see
        r, w = os.pipe()
        reply, got, conn = ask(path, HEADER("server", "nobody"), [0, 1, 2, r])
        os.close(r)
        assert "pid" in reply and 20300 <= reply["port"] < 20310, reply
        os.write(w, json.dumps({"argv": ["jupyterhub-singleuser"], "env": {"JUPYTERHUB_API_TOKEN": secret},
                                "cwd": "/"}).encode())
        os.close(w)
        listening = socket.create_connection(("127.0.0.1", reply["port"]), timeout=5)  # bound before the fork
        listening.close()
        os.close(got[0])
        conn.close()
    time.sleep(0.5)
    assert secret.encode() not in memory_of(proc.pid)
    assert proc.poll() is None


HOSTILE = """
def connect():
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); c.settimeout(5); c.connect(path); return c
def answer(c):
    try:
        return c.recv(4096).decode() or "closed"
    except OSError as exc:
        return type(exc).__name__
results = {}
c = connect(); c.send(b"[" * 200000); results["nested"] = answer(c)
c = connect()
try:
    c.send(b"{" * (100 * 1024 * 1024)); results["100MB"] = answer(c)
except OSError as exc:
    results["100MB"] = "client: " + type(exc).__name__
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    c.send(b"x" * 200000); results["200kB"] = answer(c)
c = connect(); many = [os.open(os.devnull, os.O_RDONLY) for _ in range(250)]
try:
    for _ in range(4):
        socket.send_fds(c, [b'{"kind": "kernel"}'], many)
    results["1000 fds"] = answer(c)
except BrokenPipeError:  # refused after the first 250 and closed before the rest were sent
    results["1000 fds"] = "BrokenPipeError"
held = []
for _ in range(1000):
    try:
        held.append(connect())
    except OSError as exc:
        results["connect"] = type(exc).__name__
        break
results["held"] = len(held)
for h in held:
    h.close()
# the fork server drops this account's connections beyond its cap until it has caught up with the flood
for _ in range(100):
    try:
        c = connect(); socket.send_fds(c, [b'{"kind": "server", "user": "nobody"}'], [0, 1, 2, 0])
        results["server"] = answer(c)
    except OSError as exc:
        results["server"] = type(exc).__name__
    if results["server"].startswith("{"):
        break
    time.sleep(0.1)
print(json.dumps(results))
"""


def test_hostile_requests_are_refused_and_the_student_still_gets_a_kernel(server):
    path, proc = server
    results = json.loads(as_nobody(HOSTILE, path))
    assert "flat JSON object" in results["nested"] or "too long" in results["nested"], results
    assert "too long" in results.get("200kB", results["100MB"]) or results["100MB"].startswith("client"), results
    # refused; the reply may be lost to the reset of a connection closed with messages still queued
    assert "too many file descriptors" in results["1000 fds"] or results["1000 fds"] in ("ConnectionResetError", "BrokenPipeError"), results
    assert "only the hub starts servers" in results["server"], results
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    # after all that the student's own kernel request is forked, and the child is the student, not root
    out = as_nobody("""
        r, w = os.pipe(); life, keep = socket.socketpair(); err_r, err_w = os.pipe()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); c.settimeout(10); c.connect(path)
        socket.send_fds(c, [b'{"kind": "kernel", "user": "root"}'], [0, 1, err_w, r, keep.fileno()])
        data, got, _, _ = socket.recv_fds(c, 4096, 1)
        reply = json.loads(data)
        os.write(w, json.dumps({"argv": ["/bin/sh", "-m", "ipykernel_launcher"], "env": {}, "cwd": "/"}).encode())
        os.close(w); os.close(err_w)
        exit = json.loads(c.recv(4096))
        print(json.dumps({"reply": reply, "exit": exit, "stderr": os.read(err_r, 4096).decode()}))
    """, path)
    seen = json.loads(out)
    assert "pid" in seen["reply"], seen
    assert seen["exit"] == {"exit": 126} and "not this Python's ipykernel" in seen["stderr"], seen
    assert proc.poll() is None


def test_a_child_reads_its_request_only_once_it_is_the_student(server):
    path, proc = server
    r, w = os.pipe()
    err_r, err_w = os.pipe()
    reply, got, conn = ask(path, HEADER("server", "nobody"), [0, 1, err_w, r])
    os.close(r)
    os.close(err_w)
    pid = reply["pid"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # it waits for its request as nobody
        uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
        if uid == [str(NOBODY.pw_uid)] * 4:
            break
        time.sleep(0.05)
    assert uid == [str(NOBODY.pw_uid)] * 4
    os.write(w, b'{"argv": ["/bin/sh"], "env": {}, "cwd": "/"}')
    os.close(w)
    assert json.loads(conn.recv(4096)) == {"exit": 126}
    assert "not a single-user server" in os.read(err_r, 4096).decode()
    os.close(got[0])
    conn.close()
