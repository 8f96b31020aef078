"""Each student is their own and only their own (issue 12): student A attacks B and C in the real hub container.

Three students (ana, ben, caz) are logged in, each with a running server and kernel. Everything the
attacker does runs as ana through her own kernel (the Jupyter kernel API, as a notebook would) or her
JupyterLab terminal (terminals API + websocket); the attacker's code is in tests/support/attacker.py. Root
in the container (docker exec) and the test's own sessions only learn what she must not get, and watch.
This module has its own container name and port, so it needs no lock against the other hub tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import json
import subprocess
import time

import pytest
import websocket

from conjuringd.adapters.hub_http import api
from tests.support.attacker import (
    FORKSERVER_CODE, HUNT_CODE, LISTEN_CODE, LISTEN_STOP_CODE, SNIFF_CODE, SNIFF_STOP_CODE, SU_CODE,
)
from tests.support.docker import DOCKER, require_docker
from tests.support.hubworld import World, container_logs, login, remove_hub_containers
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-isotest", 18991
STUDENTS = (("ana", "ana-class-pw-7311", False), ("ben", "ben-class-pw-5824", False), ("caz", "caz-class-pw-9467", False))
PASSWORDS = {name: password for name, password, _ in STUDENTS}
CPU_LIMIT = 0.5
ORDERS = tuple(itertools.permutations(("ana", "ben", "caz")))  # who is forked first: allocator reuse differs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers(NAME)
    w = World(tmp_path_factory.mktemp("isolation"), name=NAME, port=PORT, users=STUDENTS)
    limited = dataclasses.replace(w.config.settings.hub, cpu_limit=CPU_LIMIT)
    w.config = dataclasses.replace(w.config, settings=dataclasses.replace(w.config.settings, hub=limited))
    asyncio.run(w.converge())
    w.admin = root("cat", "/run/conjuring/secrets/service-token").strip()
    w.uids = json.loads((w.hub.paths.state_dir / "uids.json").read_text())["users"]
    w.sessions = {name: login(name, password, base=w.base) for name, password, _ in STUDENTS}
    w.kernels, w.tokens = {}, {"ben": [], "caz": []}  # every server token B and C had, one per spawn
    for name in ORDERS[0]:
        start_server(w, name)
    yield w
    asyncio.run(w.hub.close())
    remove_hub_containers(NAME)


class Terminal:
    """A's JupyterLab terminal: created by the terminals API, driven over its websocket as the browser does."""

    def __init__(self, session, user: str):
        status, _, body = session.request("POST", f"/user/{user}/api/terminals", {})
        assert status == 200, (status, body[:300])
        self.name = json.loads(body)["name"]
        self.session, self.user = session, user
        url = session.base.replace("http://", "ws://") + f"/user/{user}/terminals/websocket/{self.name}"
        cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
        self.ws = websocket.create_connection(url, timeout=5, header=[f"Cookie: {cookies}"], origin=session.base)
        self.output = ""

    def send(self, text: str) -> None:
        self.ws.send(json.dumps(["stdin", text]))

    def read_until(self, wanted: str, timeout: float = 20) -> str:
        """Everything the terminal printed so far, once `wanted` is in it or `timeout` has passed."""
        deadline = time.monotonic() + timeout
        while wanted not in self.output and time.monotonic() < deadline:
            try:
                message = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if message[0] == "stdout":
                self.output += message[1]
        return self.output

    def close(self) -> None:
        self.ws.close()
        self.session.request("DELETE", f"/user/{self.user}/api/terminals/{self.name}")


def root(*args: str, user: str = "root", timeout: float = 60) -> str:
    run = subprocess.run([DOCKER, "exec", "-u", user, NAME, *args], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def processes() -> list[dict]:
    rows = root("ps", "-eo", "pid=,ppid=,user=,args=").splitlines()
    return [dict(zip(("pid", "ppid", "user", "args"), (int(r.split()[0]), int(r.split()[1]), *r.split(None, 3)[2:])))
            for r in rows]


def forkserver_pid() -> int:
    found = [p["pid"] for p in processes() if p["user"] == "root" and p["args"].endswith("-m conjuring_forkserver")]
    assert len(found) == 1, processes()
    return found[0]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def server_state(w, name: str) -> dict | None:
    """The hub's view of `name`'s default server (None: not running or pending), as the admin sees it."""
    status, user = api(w.base, w.admin, "GET", f"/users/{name}")
    assert status == 200, (status, user)
    return user["servers"].get("")


def stop_server(w, name: str) -> None:
    status, _ = api(w.base, w.admin, "DELETE", f"/users/{name}/server", timeout=60)
    assert status in (202, 204, 400), status  # 400: not running (a spawn that failed)
    wait_for(lambda: server_state(w, name) is None, 90, f"{name}'s server to stop")
    w.kernels.pop(name, None)


def new_kernel(w, name: str) -> str:
    status, _, body = w.sessions[name].request("POST", f"/user/{name}/api/kernels", {"name": "python3"})
    assert status == 201, (status, body[:300])
    return json.loads(body)["id"]


def run(w, name: str, code: str, timeout: float = 120) -> str:
    return execute(w.sessions[name], name, w.kernels[name], code, timeout=timeout)


def start_server(w, name: str) -> None:
    """Start `name`'s server and a kernel; note B's and C's new server tokens."""
    status, _ = api(w.base, w.admin, "POST", f"/users/{name}/server", timeout=60)
    assert status in (201, 202), (status, container_logs(40, name=NAME))
    assert w.sessions[name].wait_lab(name, 180) == 200, container_logs(40, name=NAME)
    w.kernels[name] = new_kernel(w, name)
    if name in w.tokens:  # learned from their own kernel, which has their server's environment
        token = run(w, name, "import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
        assert len(token) >= 16, token
        w.tokens[name].append(token)


def fingerprint(label: str, value: str) -> tuple:
    raw = value.encode()
    return (label, raw[:6], len(raw), hashlib.sha256(raw).hexdigest())


def secrets_of_b_and_c(w) -> list[tuple]:
    wanted = []
    for name in ("ben", "caz"):
        wanted.append(fingerprint(f"{name}'s password", PASSWORDS[name]))
        wanted += [fingerprint(f"{name}'s server token #{i + 1} of {len(w.tokens[name])}", t) for i, t in enumerate(w.tokens[name])]
        wanted += [fingerprint(f"{name}'s cookie {c.name}", c.value) for c in w.sessions[name].cookies if len(c.value) >= 16]
    return wanted


def hunt(w, walk_files: bool) -> dict:
    own = run(w, "ana", "import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
    wanted = [*secrets_of_b_and_c(w), fingerprint("CONTROL ana's own token", own)]
    code = HUNT_CODE.replace("WANTED_LIST", repr(wanted)).replace("WALK_FILES", repr(walk_files))
    seen = json.loads(run(w, "ana", code, timeout=900))
    assert seen["found"].pop("CONTROL ana's own token", None), seen  # the hunt does find what is in her memory
    return seen


def test_a_finds_none_of_b_and_c_secrets_in_any_memory_file_or_proc_entry_she_can_read(world):
    own_pids = {p["pid"] for p in processes() if p["user"] == "ana"}
    leaks, scanned = {}, []
    for number, order in enumerate(ORDERS):
        sniffed = "-"
        if number:  # a fresh round: every server and kernel forked again in another order
            run(world, "ana", SNIFF_CODE)
            for name in order:
                stop_server(world, name)
            for name in order:
                start_server(world, name)
            new_kernel(world, "ana")  # a second notebook: forked right after the others' servers were
            own_pids = {p["pid"] for p in processes() if p["user"] == "ana"}
        seen = hunt(world, walk_files=number == len(ORDERS) - 1)
        if number:
            sniffed = run(world, "ana", SNIFF_STOP_CODE).strip()
        assert own_pids <= {int(p) for p in seen["mem_pids"]}, f"ana could not read her own processes' memory: {seen}"
        leaks.update({f"{label} (order {'/'.join(order)})": where for label, where in seen["found"].items()})
        scanned.append(f"order {'/'.join(order)}: memory of {len(seen['mem_pids'])} of {seen['pids_visible']} processes "
                       f"({seen['mem_bytes'] >> 20} MiB), {seen['open_files']} open files, {seen['proc_files']} /proc "
                       f"files, {seen['files']} files ({seen['file_bytes'] >> 20} MiB in all); kernels ana forked as the "
                       f"others' processes appeared (asked, alive): {sniffed}")
    assert len(secrets_of_b_and_c(world)) >= 2 * (1 + len(ORDERS) + 2), "the hunt looked for every token, password and cookie"
    assert seen["files"] > 5000, scanned  # the last hunt really went through the container's files
    print("\n".join(scanned))
    assert not leaks, (f"ana found other students' secrets (#n of m: the token of their n-th spawn, m is the one in use; "
                       f"as when the fork server parsed each request's environment before it forked, and every child "
                       f"inherited that heap): {json.dumps(leaks, indent=1)}\nscanned: {scanned}")
    assert not seen["readable"], f"ana can read {seen['readable']}"


def spawn_outcome(w, name: str) -> dict | None:
    """The server of `name` once the hub is done spawning it: its state, or None when the spawn failed."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = server_state(w, name)
        if state is None or state.get("ready"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"{name}'s spawn neither ended nor failed: {server_state(w, name)}")


def b_reaches_b(w) -> dict:
    """What ben's browser-like requests (his cookies) got after his server was started again."""
    ben = w.sessions["ben"]
    got = {}
    for what, method, path in (("lab", "GET", "/user/ben/lab"), ("status", "GET", "/user/ben/api/status"),
                               ("contents", "GET", "/user/ben/api/contents"),
                               ("kernel", "POST", "/user/ben/api/kernels")):
        status, _, body = ben.request(method, path, {"name": "python3"} if method == "POST" else None)
        got[what] = (status, body.decode(errors="replace"))
    if got["kernel"][0] == 201 and "A-was-here" not in got["kernel"][1]:
        w.kernels["ben"] = json.loads(got["kernel"][1])["id"]
        code = "import os, subprocess; print(subprocess.run(['whoami'], capture_output=True, text=True).stdout.strip(), os.getuid())"
        got["whoami"] = run(w, "ben", code).split()
    return got


def test_a_listening_on_every_port_of_the_spawners_ranges_does_not_receive_bs_traffic(world):
    stop_server(world, "ben")
    state, got, listening = None, {}, {}
    try:
        listening = json.loads(run(world, "ana", LISTEN_CODE, timeout=300))
        tried = sum(listening["bound"].values()) + sum(sum(r.values()) for r in listening["refused"].values())
        assert tried == 2 * (824 + 20000), listening
        status, _ = api(world.base, world.admin, "POST", "/users/ben/server", timeout=60)
        assert status in (201, 202), status
        state = spawn_outcome(world, "ben")
        if state:
            got = b_reaches_b(world)
    finally:
        hits = json.loads(run(world, "ana", LISTEN_STOP_CODE))
        stop_server(world, "ben")  # whatever became of his server, the next tests get a fresh one
        start_server(world, "ben")
    shown = {what: answer if what == "whoami" else (answer[0], answer[1][:160]) for what, answer in got.items()}
    story = (f"ana bound {listening.get('bound')} (refused {listening.get('refused')}); "
             f"ben's server after the restart: {state}; ben got {shown}; ana's listeners were asked {len(hits)} times: {hits[:3]}")
    print(story)
    hint = " (as with the old design's ports, 10000 + uid % 20000, which a student can take first)"
    hijacked = hits or any("A-was-here" in answer[1] for what, answer in got.items() if what != "whoami")
    assert not hijacked, "ben's traffic reached ana's listener" + hint + ": " + story
    assert state and state.get("ready"), "ben's server did not start while ana held the ports" + hint + ": " + story
    assert got["lab"][0] == got["status"][0] == got["contents"][0] == 200 and got["kernel"][0] == 201, story
    listing = json.loads(got["contents"][1])
    assert listing["type"] == "directory" and "README.md" in {item["name"] for item in listing["content"]}, story
    assert got["whoami"] == ["ben", str(world.uids["ben"])], story




def running(w, name: str) -> None:
    """`name`'s server and a kernel of theirs are up (a test before may have left them down)."""
    if server_state(w, name) is None or name not in w.kernels:
        start_server(w, name)


def test_hostile_requests_to_the_fork_server_leave_it_forking_bens_next_kernel_as_ben(world):
    running(world, "ana")
    running(world, "ben")
    before = forkserver_pid()
    bens = {p["pid"] for p in processes() if p["user"] == "ben"}
    code = FORKSERVER_CODE.replace("OTHER_NAME", repr("ben")).replace("OTHER_ID", repr(world.uids["ben"]))
    said = json.loads(run(world, "ana", code, timeout=600))
    story = json.dumps(said, indent=1)
    assert isinstance(said["kernel as other"], dict), story
    assert world.uids["ben"] not in said["kernel as other"]["uids"], "ana's kernel request ran as ben: " + story
    new_for_ben = [p for p in processes() if p["user"] == "ben" and p["pid"] not in bens]
    assert not new_for_ben, f"ana's requests started processes as ben: {new_for_ben}\n{story}"
    assert '"pid"' not in str(said["server"]) and "started" not in str(said["server"]), "ana started a server: " + story
    assert said["1200 connections"]["held"] >= 1000 or said["1200 connections"].get("refused"), story
    after = forkserver_pid()
    kernel = new_kernel(world, "ben")
    uid, parent = (int(n) for n in execute(world.sessions["ben"], "ben", kernel, "import os; print(os.getuid(), os.getppid())").split())
    story += f"\nben's next kernel: uid {uid}, parent {parent} (ben is {world.uids['ben']}, the fork server {after})"
    print(story)
    assert after == before and not said["outages"], \
        f"the fork server went away under ana's requests (pid {before}, now {after}): {story}"
    assert (uid, parent) == (world.uids["ben"], after), story


def test_su_to_ben_with_his_password_fails_from_anas_kernel_and_terminal(world):
    running(world, "ana")
    code = SU_CODE.replace("TARGET", repr("ben")).replace("PASSWORD", repr(PASSWORDS["ben"]))
    su = json.loads(run(world, "ana", code, timeout=60))
    assert su["sent"], su  # su asked for a password and was given ben's
    assert su["code"] != 0 and f"uid={world.uids['ben']}" not in su["output"], f"ana became ben through su: {su}"
    terminal = Terminal(world.sessions["ana"], "ana")
    try:
        terminal.send("su -c 'id; echo SU-DONE' ben\r")
        asked = terminal.read_until("assword")
        assert "assword" in asked, asked
        terminal.send(PASSWORDS["ben"] + "\r")
        terminal.read_until("su: ", 15)  # su's answer first: what is typed before it ends is thrown away
        terminal.send("echo TERMINAL-$(id -u)-DONE\r")
        out = terminal.read_until(f"TERMINAL-{world.uids['ana']}-DONE")
    finally:
        terminal.close()
    assert f"uid={world.uids['ben']}" not in out and "SU-DONE" not in out.replace("echo SU-DONE", ""), out
    assert f"TERMINAL-{world.uids['ana']}-DONE" in out, out


def cpu_seconds(pid: int) -> float:
    fields = root("cat", f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / int(root("getconf", "CLK_TCK"))


def test_yes_in_anas_terminal_is_held_to_cpu_limit(world):
    running(world, "ana")
    terminal, pid = Terminal(world.sessions["ana"], "ana"), None
    try:
        terminal.send("yes > /dev/null\r")
        pid = wait_for(lambda: [p["pid"] for p in processes() if p["user"] == "ana" and p["args"] == "yes"], 20,
                       "ana's yes")[0]
        time.sleep(4)  # memguard looks every few seconds; its first look only measures
        used, since = cpu_seconds(pid), time.monotonic()
        time.sleep(10)
        share = (cpu_seconds(pid) - used) / (time.monotonic() - since)
    finally:
        terminal.send("\x03")
        terminal.close()
        if pid:
            subprocess.run([DOCKER, "exec", NAME, "kill", "-9", str(pid)], capture_output=True)
    print(f"`yes` in ana's terminal: {share:.2f} CPU over 10 s at cpu_limit {CPU_LIMIT}")
    assert share > 0.05, f"`yes` hardly ran ({share:.2f} CPU): the measure measured nothing"
    assert share <= 1.5 * CPU_LIMIT, f"`yes` in ana's terminal used {share:.2f} CPU over 10 s at cpu_limit {CPU_LIMIT}"
