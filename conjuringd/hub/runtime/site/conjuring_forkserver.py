"""Start students' servers and Python kernels as forks of one process that has Jupyter imported already.

A single-user server spends about 1.3 of its 1.5 start-up CPU-seconds importing
jupyterhub.singleuser and jupyter_server, and a kernel about 0.3 importing
ipykernel and IPython. With a class logging in at once on two cores that is most
of the wait. The fork server (run as root: `python -m conjuring_forkserver`)
imports both stacks once, then forks a child per request; the child drops to the
student's account and runs the server or kernel with the pre-imported modules.

Protocol: a SOCK_SEQPACKET Unix socket. One request message: JSON
{"kind", "argv", "env", "cwd", "user"} with the child's stdin, stdout and stderr
(for a kernel also a lifeline) as SCM_RIGHTS. Replies: {"pid"} with a pidfd,
later {"exit": code} when the child has ended; or {"error"}.
- "server" is accepted from root only (the hub) and runs `jupyterhub-singleuser`
  as `user` (never as root).
- "kernel" runs `<this python> -m ipykernel_launcher` as the *caller's* uid
  (SO_PEERCRED): a student can only start their own kernels. The kernel exits
  when its lifeline closes (the student's server is gone), as ipykernel's
  parent poller would have done for a kernel that is the server's child.
A forked child's /proc/<pid>/environ shows the fork server's start-up
environment, so the entrypoint starts it with an empty one; it never reads a
secret. Children share the fork server's hash seed.

Clients: conjuring_forkclient (the hub's spawner and the kernel provisioner).
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import json
import os
import pwd
import selectors
import shutil
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

SOCKET = "/run/conjuring-forkserver.sock"
SETTINGS = "/run/conjuring/hub/settings.json"  # [hub] preload: the class's own libraries, imported here too
MAX_MESSAGE = 256 * 1024
# Everything a server and a kernel import before their first cell. Found by tracing the imports of
# forked children (a sys.meta_path hook): what they still imported after the fork was added here.
PRELOAD = (
    "jupyterhub.singleuser", "jupyter_server.serverapp", "jupyterlab", "jupyterlab.labapp", "jupyterlab_server",
    "notebook", "notebook.app", "notebook_shim", "notebook_shim.nbserver", "jupyter_lsp",
    "jupyter_lsp.virtual_documents_shadow", "jupyter_server_terminals", "jupyter_core.migrate", "jinja2.ext",
    "httpcore", "h11", "psutil", "tornado.platform.asyncio",
    "jupyter_server.kernelspecs.handlers", "jupyter_server.nbconvert.handlers", "jupyter_server.view.handlers",
    "jupyter_server.services.shutdown", *(f"jupyter_server.services.{name}.handlers" for name in (
        "api", "config", "contents", "events", "kernels", "kernelspecs", "nbconvert", "security", "sessions")),
    "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.kernelspec", "IPython",
    "IPython.core.debugger", "pdb", "ipykernel.debugger", "IPython.core.completerlib", "IPython.core.oinspect",
    "IPython.extensions.storemagic", "pydoc", "xmlrpc.server", "conjuring_spare", "conjuring_forkclient",
)
KERNEL_MODULE = ("-m", "ipykernel_launcher")
PENDING_SECONDS = 5  # a connection must send its request within this
NICE = 5  # students' servers and kernels yield the CPU to the hub and the proxy: logins and /hub/health stay quick


# --- the fork server -------------------------------------------------------------------------

def preload(names: tuple[str, ...]) -> list[str]:
    """Import what every server and kernel needs; returns the modules that could not be imported."""
    missing = []
    for name in names:
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001 - a teacher's module may fail any way; it is then imported per kernel
            missing.append(f"{name} ({exc})")
    return missing


def teacher_preload(settings: str = SETTINGS) -> tuple[str, ...]:
    try:
        with open(settings, encoding="utf-8") as file:
            return tuple(json.load(file).get("preload", ()))
    except (OSError, ValueError):
        return ()


def serve(path: str = SOCKET) -> None:
    missing = preload(PRELOAD + teacher_preload())
    if missing:
        print(f"conjuring-forkserver: not preloaded: {', '.join(missing)}", file=sys.stderr, flush=True)
    gc.freeze()  # the collector leaves the imported objects alone: fewer copy-on-write pages per child
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    staging = f"{path}.{os.getpid()}"
    listener.bind(staging)
    os.chmod(staging, 0o666)  # students' servers start their kernels here; SO_PEERCRED says who asks
    listener.listen(64)
    os.replace(staging, path)  # the socket appears only once everything is imported
    print(f"conjuring-forkserver: ready on {path} ({len(sys.modules)} modules)", file=sys.stderr, flush=True)
    loop(listener, wake_r)


def loop(listener: socket.socket, wake_r: int) -> None:
    """Accept, answer each request once it has arrived, reap children. Never blocks on one client: a
    connection that says nothing is dropped after PENDING_SECONDS without holding up anyone else."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "reap")
    pending: dict[socket.socket, float] = {}  # connections whose request has not come yet -> when accepted
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection to tell its exit status
    while True:
        for key, _ in selector.select(timeout=PENDING_SECONDS if pending else None):
            if key.data == "accept":
                conn, _ = listener.accept()
                pending[conn] = time.monotonic()
                selector.register(conn, selectors.EVENT_READ, "request")
            elif key.data == "request":
                selector.unregister(key.fileobj)
                del pending[key.fileobj]
                pid = answer(key.fileobj)
                if pid is None:
                    key.fileobj.close()
                else:
                    waiting[pid] = key.fileobj
                    selector.register(key.fileobj, selectors.EVENT_READ, pid)
            elif key.data == "reap":
                drain(wake_r)
                reap(waiting, selector)
            else:  # the client hung up; its child runs on
                selector.unregister(key.fileobj)
                waiting.pop(key.data, None)
                key.fileobj.close()
        for conn in [c for c, since in pending.items() if time.monotonic() - since > PENDING_SECONDS]:
            selector.unregister(conn)
            del pending[conn]
            conn.close()


def drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def reap(waiting: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            selector.unregister(conn)
            try:
                conn.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            except OSError:
                pass  # the client is gone: nobody to tell
            conn.close()


def answer(conn: socket.socket) -> int | None:
    """Read one request, fork its child, reply with the pid and a pidfd. None when refused."""
    fds: list[int] = []
    try:
        conn.settimeout(2)  # the request is there already (selector); only the reply could wait
        data, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 4)
        uid = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        caller_uid = int.from_bytes(uid[4:8], sys.byteorder)
        request = json.loads(data)
        account = account_for(request, caller_uid, len(fds))
        pid = os.fork()
        if pid == 0:
            conn.close()
            run_child(request, account, fds)
        pidfd = os.pidfd_open(pid)
        try:
            socket.send_fds(conn, [json.dumps({"pid": pid}).encode()], [pidfd])
        finally:
            os.close(pidfd)
        return pid
    except (OSError, ValueError, KeyError, TypeError) as exc:  # PermissionError is an OSError
        try:
            conn.send(json.dumps({"error": str(exc) or type(exc).__name__}).encode())
        except OSError:
            pass
        return None
    finally:
        for fd in fds:
            os.close(fd)


def account_for(request: dict, caller_uid: int, fd_count: int) -> pwd.struct_passwd:
    """The account the child runs as; PermissionError or ValueError when the request is not allowed."""
    kind, argv = request["kind"], request["argv"]
    if kind == "server":
        if caller_uid != 0:
            raise PermissionError("only the hub starts servers")
        if os.path.basename(argv[0]) != "jupyterhub-singleuser":
            raise ValueError(f"not a single-user server: {argv[0]}")
        account = pwd.getpwnam(request["user"])
    elif kind == "kernel":
        if not forkable_kernel(argv):
            raise ValueError(f"not this Python's ipykernel: {' '.join(argv[:3])}")
        if fd_count != 4:
            raise ValueError("a kernel needs stdin, stdout, stderr and a lifeline")
        account = pwd.getpwuid(caller_uid)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    if account.pw_uid == 0:
        raise PermissionError("nothing runs as root from here")
    if fd_count < 3:
        raise ValueError("stdin, stdout and stderr are needed")
    return account


def forkable_kernel(argv: list[str]) -> bool:
    """Whether `argv` starts a kernel this fork server runs: `<this python> -m ipykernel_launcher ...`."""
    return same_python(argv[0]) and tuple(argv[1:3]) == KERNEL_MODULE


def same_python(executable: str) -> bool:
    """Whether `executable` is this interpreter in this environment: venv/bin/python and venv/bin/python3
    both are (a server started without the fork server runs as python3); another venv's python is not."""
    return (os.path.dirname(os.path.abspath(executable)) == os.path.dirname(sys.executable)
            and os.path.realpath(executable) == os.path.realpath(sys.executable))


def run_child(request: dict, account: pwd.struct_passwd, fds: list[int]) -> None:
    """In the forked child: become the student, run the server or kernel, exit. Never returns."""
    code = 1
    try:
        lifeline = become(account, request, fds)
        code = run_server(request["argv"]) if request["kind"] == "server" else run_kernel(request["argv"], lifeline)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must never return into the fork server's loop
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def become(account: pwd.struct_passwd, request: dict, fds: list[int]) -> int | None:
    """Session, stdio, privileges, environment and directory of the child; returns the lifeline fd."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    lifeline = None
    if len(fds) > 3:
        lifeline = os.dup2(fds[3], 3, inheritable=False)
    os.closerange(4 if lifeline is not None else 3, os.sysconf("SC_OPEN_MAX"))
    os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
    os.setresgid(account.pw_gid, account.pw_gid, account.pw_gid)
    os.setresuid(account.pw_uid, account.pw_uid, account.pw_uid)
    _libc().prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/<pid> owned by the student, as after exec
    os.umask(0o022)
    os.nice(NICE)
    os.environ.clear()  # also drops libc's pointers into the start-up environment, which show_as() overwrites
    os.environ.update(request["env"])
    show_as(request["argv"])
    for directory in (request.get("cwd"), account.pw_dir, "/"):
        try:
            os.chdir(directory)
            break
        except (OSError, TypeError):
            continue
    import conjuring_homepaths  # here, not at the top: a separate concern, loaded by each child

    conjuring_homepaths.settle(request["kind"], request["argv"])  # what the imports fixed from root's HOME, now from the student's
    return lifeline


def show_as(argv: list[str]) -> None:
    """Make ps (and memguard, which finds kernels by command line) show the command the child runs.

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


def run_server(argv: list[str]) -> int:
    from jupyterhub.singleuser import main

    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(shutil.which(argv[0]) or argv[0])  # as when run as a script
    return main() or 0


def run_kernel(argv: list[str], lifeline: int | None) -> int:
    import threading

    from ipykernel import kernelapp

    if lifeline is not None:
        threading.Thread(target=_exit_when_closed, args=(lifeline,), daemon=True, name="lifeline").start()
    sys.argv = ["ipykernel_launcher", *argv[3:]]
    del sys.path[0]  # the folder `python -m` put first, which ipykernel_launcher removes (IPython adds '' later)
    kernelapp.launch_new_instance()
    return 0


def _exit_when_closed(fd: int) -> None:
    while os.read(fd, 64):
        pass
    os._exit(1)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else SOCKET)
