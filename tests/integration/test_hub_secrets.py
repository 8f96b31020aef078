"""Secrets between students in the real hub container (issue 12): alice hunts for bob's and the teacher's.

Three students are logged in (alice, bob, teacher); everything alice does runs in
her own kernel through the Jupyter kernel API. Root in the container (docker
exec) and the test's own sessions only collect what she must not find: the
others' passwords, server API tokens and cookies, the hub's cookie secret and
the daemon's service token. Alice is given only a prefix, the length and a
SHA-256 of each, so her search never holds one itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import subprocess

import pytest

from tests.support.docker import DOCKER, require_docker
from tests.support.hubworld import NAME, USERS, World, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CPU_LIMIT = 0.5

# every regular file she can read (the container's whole filesystem, first 32 MiB of each), and /proc/<pid>/
# environ, cmdline, status of every process she can read
HUNT = r"""
import hashlib, json, os
def hunt(wanted):
    found, files, procs = set(), 0, 0
    def look(where, data):
        for label, prefix, length, digest in wanted:
            start = data.find(prefix)
            while start != -1:
                if hashlib.sha256(data[start:start + length]).hexdigest() == digest:
                    found.add(f"{label} in {where}")
                start = data.find(prefix, start + 1)
    for top, dirs, names in os.walk("/", onerror=lambda e: None):
        if top == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
        for name in names:
            path = os.path.join(top, name)
            try:
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                with open(path, "rb") as handle:
                    data = handle.read(32 << 20)
            except OSError:
                continue
            files += 1
            look(path, data)
    for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
        for part in ("environ", "cmdline", "status", "comm"):
            try:
                data = open(f"/proc/{pid}/{part}", "rb").read()
            except OSError:
                continue
            procs += part == "cmdline"
            look(f"/proc/{pid}/{part}", data)
    private = [p for p in ("/srv/jupyterhub/jupyterhub.sqlite", "/srv/jupyterhub/jupyterhub_cookie_secret",
               "/run/conjuring/secrets/users.json", "/run/conjuring/hub/srv/jupyterhub_config.py",
               "/var/lib/conjuring-provision.json", "/etc/shadow") if os.access(p, os.R_OK)]
    return {"found": sorted(found), "files": files, "procs": procs, "readable": private}
print(json.dumps(hunt(WANTED)))
"""

SU = r"""
import os, pty, time, select
def su(target, password, command="id -un"):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("su", ["su", "-c", command, target])
    out, deadline, sent = b"", time.monotonic() + 20, False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not sent and b"assword" in out:
            os.write(fd, password.encode() + b"\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status), sent
"""

YES = r"""
import os, subprocess, time
yes = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, start_new_session=True)  # not a kernel
time.sleep(12)
fields = open(f"/proc/{yes.pid}/stat").read().rsplit(")", 1)[1].split()
yes.kill()
print((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
"""


def root(*args: str, user: str = "root") -> str:
    run = subprocess.run([DOCKER, "exec", "-u", user, NAME, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers()
    w = World(tmp_path_factory.mktemp("secrets"))
    limited = dataclasses.replace(w.config.settings.hub, cpu_limit=CPU_LIMIT)
    w.config = dataclasses.replace(w.config, settings=dataclasses.replace(w.config.settings, hub=limited))
    asyncio.run(w.converge())
    w.sessions = {}
    for name, password, _ in USERS:
        w.sessions[name] = login(name, password)
        w.sessions[name].kernel = start_kernel(w.sessions[name], name)
    yield w
    asyncio.run(w.hub.close())
    remove_hub_containers()


def server_token(world, user: str) -> str:
    """The API token of `user`'s server, which their kernels inherit (a forked server's /proc/<pid>/environ shows
    the fork server's start-up environment, not this)."""
    session = world.sessions[user]
    token = execute(session, user, session.kernel, "import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
    assert len(token) >= 16, token
    return token


def others_secrets(world) -> list[tuple[str, str]]:
    found = []
    for name, password, _ in USERS[1:]:  # bob and the teacher
        found.append((f"{name}'s password", password))
        found.append((f"{name}'s server token", server_token(world, name)))
        found += [(f"{name}'s cookie {c.name}", c.value) for c in world.sessions[name].cookies if len(c.value) >= 16]
    found.append(("the cookie secret", root("cat", "/srv/jupyterhub/jupyterhub_cookie_secret").strip()))
    found.append(("the service token", root("cat", "/run/conjuring/secrets/service-token").strip()))
    found.append(("the probe's password", root("cat", "/run/conjuring/secrets/users.json").split('"probe"')[1]
                  .split('"password": "')[1].split('"')[0]))
    return found


def test_alice_finds_no_one_elses_password_token_or_cookie_in_any_file_or_process(world):
    secrets = others_secrets(world)
    assert len(secrets) >= 10, [label for label, _ in secrets]
    wanted = [(label, value[:4].encode(), len(value.encode()), hashlib.sha256(value.encode()).hexdigest())
              for label, value in secrets]
    code = HUNT.replace("WANTED", repr(wanted))
    alice = world.sessions["alice"]
    seen = json.loads(execute(alice, "alice", alice.kernel, code, timeout=600))
    assert seen["files"] > 5000 and seen["procs"] > 10  # the hunt really went through the container
    assert seen["found"] == [] and seen["readable"] == [], seen
    # the control: the same hunt finds alice's own token, which her server and kernels hold
    own = server_token(world, "alice")
    mine = [("alice's token", own[:4].encode(), len(own), hashlib.sha256(own.encode()).hexdigest())]
    assert json.loads(execute(alice, "alice", alice.kernel, HUNT.replace("WANTED", repr(mine)), timeout=600))["found"]


def test_su_to_another_student_with_their_password_fails(world):
    alice = world.sessions["alice"]
    out = execute(alice, "alice", alice.kernel, SU + "print(repr(su('bob', 'bob-pw-1')))", timeout=60)
    text, code, sent = eval(out)
    assert sent, text  # su asked for the password and got bob's
    assert code != 0 and "bob" not in text.split("assword:", 1)[-1].split(), text
    text, code, _ = eval(execute(alice, "alice", alice.kernel, SU + "print(repr(su('teacher', 'teacher-pw-1')))"))
    assert code != 0, text
    shadow = root("getent", "shadow", "alice", "bob", "teacher").splitlines()
    assert [line.split(":")[1] for line in shadow] == ["!", "!", "!"]  # locked: no hash of any password kept


def test_a_process_that_is_not_a_kernel_is_held_to_cpu_limit(world):
    alice = world.sessions["alice"]
    used = float(execute(alice, "alice", alice.kernel, YES, timeout=120))
    # unthrottled, `yes` uses ~12 CPU-s in 12 s; memguard measures one interval (3 s), then holds it to 0.5 CPU
    assert used < 3 + 9 * CPU_LIMIT + 1.5, f"`yes` used {used:.1f} CPU-s in 12 s at cpu_limit {CPU_LIMIT}"
