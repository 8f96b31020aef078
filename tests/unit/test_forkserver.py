"""conjuring_forkserver's rules and its command-line rewrite, without a hub (the real thing: test_hub_forkserver.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import sys
from pathlib import Path

import pytest

from conjuringd.hub.dockerfile import RUNTIME_SRC

spec = importlib.util.spec_from_file_location("conjuring_forkserver", RUNTIME_SRC / "site" / "conjuring_forkserver.py")
forkserver = importlib.util.module_from_spec(spec)
spec.loader.exec_module(forkserver)

NOBODY = pwd.getpwnam("nobody")
KERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "/tmp/kernel.json"]


def request(kind: str, argv: list[str], user: str = "") -> dict:
    return {"kind": kind, "argv": argv, "env": {}, "cwd": "/", "user": user}


def test_the_hub_gets_a_server_run_as_the_student_it_names():
    account = forkserver.account_for(request("server", ["jupyterhub-singleuser"], "nobody"), 0, 3)
    assert account.pw_uid == NOBODY.pw_uid


@pytest.mark.parametrize("req, caller, fds, why", [
    (request("server", ["jupyterhub-singleuser"], "nobody"), NOBODY.pw_uid, 3, "only the hub starts servers"),
    (request("server", ["/bin/sh"], "nobody"), 0, 3, "not a single-user server"),
    (request("server", ["jupyterhub-singleuser"], "root"), 0, 3, "nothing runs as root"),
    (request("kernel", ["/bin/sh", "-m", "ipykernel_launcher"]), NOBODY.pw_uid, 4, "not this Python's ipykernel"),
    (request("kernel", KERNEL), NOBODY.pw_uid, 3, "a lifeline"),
    (request("kernel", KERNEL), 0, 4, "nothing runs as root"),
    (request("shell", ["/bin/sh"]), 0, 3, "unknown kind"),
])
def test_requests_outside_the_rules_are_refused(req, caller, fds, why):
    with pytest.raises((PermissionError, ValueError), match=why):
        forkserver.account_for(req, caller, fds)


def test_a_kernel_is_this_environments_python_under_any_of_its_names():
    python3 = os.path.join(os.path.dirname(sys.executable), "python3")
    assert forkserver.same_python(sys.executable) and forkserver.same_python(python3)
    assert not forkserver.same_python("/usr/bin/python3")  # the same interpreter, another environment
    assert not forkserver.same_python("/bin/sh")


def test_a_kernel_runs_as_whoever_asks_whatever_user_the_request_names():
    account = forkserver.account_for(request("kernel", KERNEL, user="root"), NOBODY.pw_uid, 4)
    assert account.pw_uid == NOBODY.pw_uid


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
            forkserver.show_as(KERNEL)
            os.write(write, Path("/proc/self/cmdline").read_bytes() + b"|" + Path("/proc/self/comm").read_bytes())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        cmdline, comm = pipe.read().split(b"|")
    os.waitpid(pid, 0)
    assert cmdline.rstrip(b"\0").startswith(" ".join(KERNEL).encode()[:40])
    assert comm.strip() == b"ipykernel_launc"
