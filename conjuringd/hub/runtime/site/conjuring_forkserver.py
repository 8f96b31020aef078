"""Start students' servers and Python kernels as forks of one process that has Jupyter imported already.

A single-user server spends about 1.3 of its 1.5 start-up CPU-seconds importing
jupyterhub.singleuser and jupyter_server, and a kernel about 0.3 importing
ipykernel and IPython. With a class logging in at once on two cores that is most
of the wait. The fork server (run as root: `python -m conjuring_forkserver`)
imports both stacks once, then forks a child per request; the child drops to the
student's account and runs the server or kernel with the pre-imported modules
(conjuring_forkchild).

It holds nothing secret, by design: every child starts as a copy of its memory.
The root process reads only a small header and never the request's command
line or environment (which carry the server's API token). Protocol, on a
SOCK_SEQPACKET Unix socket (root:conjuring-students 0660):
- request: one message, the JSON header {"kind": "server"|"kernel", "user": name}
  (at most HEADER_MAX bytes) with SCM_RIGHTS stdin, stdout, stderr, the read end
  of a pipe, and for a kernel a lifeline;
- reply: {"pid"} (a server also gets {"port"}) with a pidfd, or {"error"};
  later {"exit": code} when the child has ended.
- The client then writes {"argv", "env", "cwd"} into the pipe. Only the child,
  already running as the student, reads it.
Who may ask for what (SO_PEERCRED):
- "server": root only (the hub); it runs as the student the header names. The
  root parent binds its listening socket on a port below 1024 before the fork
  (the hub container sets net.ipv4.ip_unprivileged_port_start=1024, so no student
  can listen there): whatever answers on that port is that student's server.
- "kernel": a member of the students' group, as themselves whatever the header
  says; it exits when its lifeline closes (the student's server is gone).
Hostile requests (too long, deeply nested, too many fds, silent connections,
connection floods) are refused or dropped without harm to anyone else.
"""

from __future__ import annotations

import errno
import gc
import grp
import json
import os
import pwd
import resource
import selectors
import signal
import socket
import sys
import time

import conjuring_forkchild

SOCKET = "/run/conjuring-forkserver.sock"
SETTINGS = "/run/conjuring/hub/settings.json"  # [hub] preload: the class's own libraries, imported here too
GROUP = "conjuring-students"  # provision.py keeps the class in it; its members may start their own kernels
HEADER_MAX = 1024
SERVER_PORTS = range(200, 1024)  # privileged in the hub container: only this root process binds them
PENDING_SECONDS = 5  # a connection must send its request within this
PENDING_PER_UID = 8  # more silent connections from one account are dropped at once
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
    "conjuring_homepaths",
)


class Refused(Exception):
    """A request outside the rules; its message goes back to the client."""


# --- start-up --------------------------------------------------------------------------------

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
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # room for every student's connections
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    staging = f"{path}.{os.getpid()}"
    listener.bind(staging)
    os.chmod(staging, 0o600)
    try:
        os.chown(staging, 0, grp.getgrnam(GROUP).gr_gid)
        os.chmod(staging, 0o660)
    except KeyError:
        print(f"conjuring-forkserver: no group {GROUP}: only root may connect", file=sys.stderr, flush=True)
    listener.listen(64)
    listener.setblocking(False)
    os.replace(staging, path)  # the socket appears only once everything is imported
    print(f"conjuring-forkserver: ready on {path} ({len(sys.modules)} modules)", file=sys.stderr, flush=True)
    Loop(listener, wake_r, soft).run()


# --- the loop --------------------------------------------------------------------------------

class Loop:
    """Accept, answer each request once it has arrived, reap children. Never blocks on one client."""

    def __init__(self, listener: socket.socket, wake_r: int, child_nofile: int = 1024,
                 is_student=None, server_ports: range = SERVER_PORTS):
        self.listener, self.wake_r, self.child_nofile = listener, wake_r, child_nofile
        self.is_student = is_student or in_students_group
        self.server_ports = server_ports
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(wake_r, selectors.EVENT_READ, "reap")
        self.pending: dict[socket.socket, tuple[float, int]] = {}  # connection -> (accepted at, peer uid)
        self.waiting: dict[int, socket.socket] = {}  # child pid -> the connection to tell its exit status
        self.paused_until = 0.0  # out of file descriptors: stop accepting for a moment

    def run(self) -> None:
        while True:
            self.step(PENDING_SECONDS if self.pending else None)

    def step(self, timeout: float | None) -> None:
        now = time.monotonic()
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        if self.paused_until:
            timeout = min(timeout or 1.0, self.paused_until - now)
        for key, _ in self.selector.select(timeout=timeout):
            if key.data == "accept":
                self.accept()
            elif key.data == "request":
                self.request(key.fileobj)
            elif key.data == "reap":
                drain(self.wake_r)
                self.reap()
            else:  # the client hung up; its child runs on
                self.forget(key.fileobj)
                self.waiting.pop(key.data, None)
        self.drop_silent()

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: make room, never die
            print(f"conjuring-forkserver: accept: {exc}", file=sys.stderr, flush=True)
            if exc.errno in (errno.EMFILE, errno.ENFILE) and self.pending:
                self.forget(min(self.pending, key=lambda c: self.pending[c][0]))
            else:
                self.selector.unregister(self.listener)
                self.paused_until = time.monotonic() + 1.0
            return
        uid = peer_uid(conn)
        if sum(1 for _, who in self.pending.values() if who == uid) >= PENDING_PER_UID:
            conn.close()
            return
        self.pending[conn] = (time.monotonic(), uid)
        self.selector.register(conn, selectors.EVENT_READ, "request")

    def request(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        _, uid = self.pending.pop(conn)
        pid = answer(conn, uid, self.is_student, self.server_ports, self.child_nofile)
        if pid is None:
            conn.close()
        else:
            self.waiting[pid] = conn
            self.selector.register(conn, selectors.EVENT_READ, pid)

    def forget(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        self.pending.pop(conn, None)
        conn.close()

    def drop_silent(self) -> None:
        now = time.monotonic()
        for conn in [c for c, (since, _) in self.pending.items() if now - since > PENDING_SECONDS]:
            self.forget(conn)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.waiting.pop(pid, None)
            if conn is not None:
                try:
                    conn.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
                except OSError:
                    pass  # the client is gone: nobody to tell
                self.forget(conn)


def drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return int.from_bytes(creds[4:8], sys.byteorder)


def in_students_group(account: pwd.struct_passwd) -> bool:
    try:
        return account.pw_name in grp.getgrnam(GROUP).gr_mem
    except KeyError:
        return False


# --- one request -----------------------------------------------------------------------------

def answer(conn: socket.socket, caller_uid: int, is_student, server_ports: range, child_nofile: int) -> int | None:
    """Read one header, fork its child, reply with the pid (and port) and a pidfd. None when refused."""
    fds: list[int] = []
    listener = None
    try:
        conn.setblocking(False)  # the header is there already (the selector said so)
        data, fds, flags, _ = socket.recv_fds(conn, HEADER_MAX + 1, 6)
        kind, account = decide(data, flags, caller_uid, len(fds), is_student)
        reply: dict = {}
        if kind == "server":
            listener = listen_for(account.pw_uid, server_ports)
            reply["port"] = listener.getsockname()[1]
        pid = os.fork()
        if pid == 0:
            conjuring_forkchild.run(kind, account, fds, listener, child_nofile)  # never returns
        reply["pid"] = pid
        pidfd = os.pidfd_open(pid)
        try:
            conn.settimeout(2)
            socket.send_fds(conn, [json.dumps(reply).encode()], [pidfd])
        finally:
            os.close(pidfd)
        return pid
    except (Refused, OSError) as exc:
        try:
            conn.send(json.dumps({"error": str(exc) or type(exc).__name__}).encode())
        except OSError:
            pass
        return None
    finally:
        for fd in fds:
            os.close(fd)
        if listener is not None:
            listener.close()


def decide(data: bytes, flags: int, caller_uid: int, fd_count: int, is_student) -> tuple[str, pwd.struct_passwd]:
    """The kind and the account of the child, from the header alone; Refused when it is not allowed."""
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > HEADER_MAX:
        raise Refused("request too long or too many file descriptors")
    header = parse_header(data)
    kind = header.get("kind")
    if kind == "server":
        if caller_uid != 0:
            raise Refused("only the hub starts servers")
        account = lookup(lambda: pwd.getpwnam(str(header.get("user"))), "no such student")
        needed = 4
    elif kind == "kernel":
        account = lookup(lambda: pwd.getpwuid(caller_uid), "no such account")
        needed = 5
    else:
        raise Refused(f"unknown kind {str(kind)[:40]!r}")
    if account.pw_uid == 0:
        raise Refused("nothing runs as root from here")
    if not is_student(account):
        raise Refused(f"{account.pw_name} is not a student of this class")
    if fd_count != needed:
        raise Refused(f"a {kind} needs stdin, stdout, stderr, the request pipe" + (" and a lifeline" if needed == 5 else ""))
    return kind, account


def parse_header(data: bytes) -> dict:
    if data.count(b"[") + data.count(b"{") > 4:  # a flat object; nesting is refused before the parser sees it
        raise Refused("the header is a flat JSON object")
    try:
        header = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Refused(f"the header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise Refused("the header is a flat JSON object")
    return header


def lookup(find, why: str) -> pwd.struct_passwd:
    try:
        return find()
    except (KeyError, OverflowError, ValueError):
        raise Refused(why) from None


def listen_for(uid: int, ports: range) -> socket.socket:
    """A listening socket on a free port of `ports`, tried from a place that depends on the student."""
    start = uid % len(ports)
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            return sock
        except OSError:
            sock.close()
    raise Refused("no free port for a server")


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else SOCKET)
