"""A child of conjuring_forkserver: become the student, read the request, run the server or kernel.

Order matters: the child first becomes the student (groups, gid, uid), and only
then reads its request (argv, environment, folder) from the pipe the client
passed; nothing of a request ever passes through the root fork server. A request
that is not a single-user server or this Python's ipykernel ends the child, as
the student, with status 126.

File descriptors of the child: 0-2 the client's stdio, 3 the request pipe (read
and closed), 4 the kernel's lifeline or the server's listening socket; no others.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import json
import os
import pwd
import resource
import select
import shutil
import signal
import socket
import sys
import traceback
from pathlib import Path

KERNEL_MODULE = ("-m", "ipykernel_launcher")
REQUEST_MAX = 1024 * 1024
REQUEST_SECONDS = 30  # the client writes the request right after the reply
NICE = 5  # students' servers and kernels yield the CPU to the hub and the proxy: logins and /hub/health stay quick
REQUEST_FD, EXTRA_FD = 3, 4


def run(kind: str, account: pwd.struct_passwd, fds: list[int], listener: socket.socket | None, nofile: int) -> None:
    """In the forked child. Never returns."""
    code = 1
    try:
        place_fds([*fds, listener.fileno()] if listener is not None else fds)
        become(account, nofile)
        request = read_request(REQUEST_FD)
        check(kind, request["argv"])
        settle(kind, account, request)
        code = run_server(request["argv"], EXTRA_FD) if kind == "server" else run_kernel(request["argv"], EXTRA_FD)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except PermissionError as exc:
        print(f"conjuring-forkserver child: {exc}", file=sys.stderr)
        code = 126
    except BaseException:  # noqa: BLE001 - the child must never return into the fork server's loop
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def place_fds(fds: list[int]) -> None:
    """stdio at 0-2, the request pipe at 3, the lifeline or listener at 4; everything else closed."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in fds]  # out of the way of the targets
    for target, fd in enumerate(moved):
        os.dup2(fd, target, inheritable=target < 3)
    os.closerange(len(moved), os.sysconf("SC_OPEN_MAX"))


def become(account: pwd.struct_passwd, nofile: int) -> None:
    os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
    os.setresgid(account.pw_gid, account.pw_gid, account.pw_gid)
    os.setresuid(account.pw_uid, account.pw_uid, account.pw_uid)
    _libc().prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/<pid> owned by the student, as after exec
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))  # what the fork server was started with
    os.umask(0o022)
    os.nice(NICE)


def read_request(fd: int) -> dict:
    """{"argv": [str], "env": {str: str}, "cwd": str|None} from the pipe, as the student."""
    chunks, size = [], 0
    while True:
        if not select.select([fd], [], [], REQUEST_SECONDS)[0]:
            raise TimeoutError("no request came")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        size += len(chunk)
        if size > REQUEST_MAX:
            raise ValueError("request too long")
        chunks.append(chunk)
    os.close(fd)
    request = json.loads(b"".join(chunks))
    argv, env, cwd = request["argv"], request["env"], request.get("cwd")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv is a list of strings")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("env maps strings to strings")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError("cwd is a string")
    return {"argv": argv, "env": env, "cwd": cwd}


def check(kind: str, argv: list[str]) -> None:
    if kind == "server" and os.path.basename(argv[0]) != "jupyterhub-singleuser":
        raise PermissionError(f"not a single-user server: {argv[0]}")
    if kind == "kernel" and not forkable_kernel(argv):
        raise PermissionError(f"not this Python's ipykernel: {' '.join(argv[:3])}")


def forkable_kernel(argv: list[str]) -> bool:
    """Whether `argv` starts a kernel the fork server runs: `<this python> -m ipykernel_launcher ...`."""
    return bool(argv) and same_python(argv[0]) and tuple(argv[1:3]) == KERNEL_MODULE


def same_python(executable: str) -> bool:
    """Whether `executable` is this interpreter in this environment: venv/bin/python and venv/bin/python3
    both are (a server started without the fork server runs as python3); another venv's python is not."""
    return (os.path.dirname(os.path.abspath(executable)) == os.path.dirname(sys.executable)
            and os.path.realpath(executable) == os.path.realpath(sys.executable))


def settle(kind: str, account: pwd.struct_passwd, request: dict) -> None:
    """Environment, command line and folder of the child, and the paths its imports fixed as root."""
    os.environ.clear()  # also drops libc's pointers into the start-up environment, which show_as() overwrites
    os.environ.update(request["env"])
    show_as(request["argv"])
    for directory in (request["cwd"], account.pw_dir, "/"):
        try:
            os.chdir(directory)
            break
        except (OSError, TypeError):
            continue
    import conjuring_homepaths  # imported by the fork server already (PRELOAD)

    conjuring_homepaths.settle(kind, request["argv"])


def show_as(argv: list[str]) -> None:
    """Make ps (and memguard) show the command the child runs.

    As setproctitle does: the start-up argv and environment strings are one block of this process's
    memory, which /proc/<pid>/cmdline reads; it is overwritten in place (the entrypoint leaves room).
    """
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    arg_start, env_end = int(fields[45]), int(fields[48])  # fields 48 and 51 of proc(5)
    room = env_end - arg_start
    title = " ".join(argv).encode()[: room - 1]
    ctypes.memmove(arg_start, title.ljust(room, b"\0"), room)
    name = os.path.basename(argv[2] if argv[1:2] == ["-m"] else argv[0]).encode()[:15]
    _libc().prctl(15, name, 0, 0, 0)  # PR_SET_NAME: what top shows


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def run_server(argv: list[str], listen_fd: int) -> int:
    """jupyterhub-singleuser, serving on the socket the fork server bound for it (never binding its own)."""
    from jupyter_server.serverapp import ServerApp
    from jupyterhub.singleuser import main

    sock = socket.socket(fileno=listen_fd)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    for name in ("_find_http_port", "_bind_http_server_tcp"):
        if not hasattr(ServerApp, name):
            raise RuntimeError(f"jupyter_server has no ServerApp.{name}: cannot serve on the bound socket")
    ServerApp._find_http_port = lambda app: setattr(app, "port", port)
    ServerApp._bind_http_server_tcp = lambda app: app.http_server.add_sockets([sock]) or True
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(shutil.which(argv[0]) or argv[0])  # as when run as a script
    return main() or 0


def run_kernel(argv: list[str], lifeline: int) -> int:
    import threading

    from ipykernel import kernelapp

    threading.Thread(target=_exit_when_closed, args=(lifeline,), daemon=True, name="lifeline").start()
    sys.argv = ["ipykernel_launcher", *argv[3:]]
    del sys.path[0]  # the folder `python -m` put first, which ipykernel_launcher removes (IPython adds '' later)
    kernelapp.launch_new_instance()
    return 0


def _exit_when_closed(fd: int) -> None:
    while os.read(fd, 64):
        pass
    os._exit(1)
