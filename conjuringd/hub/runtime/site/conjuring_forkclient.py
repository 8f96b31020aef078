"""The clients of conjuring_forkserver: a Popen-like handle on a forked child, and the kernel provisioner.

`start()` asks the fork server for a server (the hub's QueuedSpawner, which
learns the server's port from the reply and then sends the command line and
environment with `ForkedProcess.send()`); `spawn()` does both for a kernel
(ForkProvisioner, in a student's server: entry point "conjuring-forkserver",
chosen by JUPYTER_DEFAULT_PROVISIONER_NAME). Both return None when the fork
server is not running, and the caller then starts the process the usual way;
a refusal raises RuntimeError.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess

from conjuring_forkchild import forkable_kernel
from conjuring_forkserver import SOCKET


class ForkedProcess:
    """What a client keeps of a forked child: enough of Popen for JupyterHub and jupyter_client."""

    stdin = stdout = stderr = None

    def __init__(self, conn: socket.socket, pid: int, pidfd: int, request_w: int, lifeline: socket.socket | None,
                 port: int | None = None):
        self.conn, self.pid, self.pidfd, self.request_w, self.lifeline = conn, pid, pidfd, request_w, lifeline
        self.port, self.args = port, []
        self.returncode: int | None = None

    def send(self, argv: list[str], env: dict, cwd: str | None) -> None:
        """The child's command line, environment and folder; only the child (as the student) reads them."""
        self.args = list(argv)
        try:
            with open(self.request_w, "wb", closefd=True) as pipe:
                pipe.write(json.dumps({"argv": list(argv), "env": dict(env), "cwd": cwd}).encode())
        except OSError:
            pass  # the child is gone already: poll() tells
        self.request_w = -1

    def poll(self) -> int | None:
        if self.returncode is None and self.pidfd >= 0 and select.select([self.pidfd], [], [], 0)[0]:
            self.returncode = self._exit_code()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self.pidfd >= 0:
            if not select.select([self.pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.poll()

    def _exit_code(self) -> int:
        self.conn.settimeout(1)
        try:
            return int(json.loads(self.conn.recv(4096) or b'{"exit": 1}')["exit"])
        except (OSError, ValueError, KeyError, TypeError):
            return 1  # ended, status not known
        finally:
            self.close()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None and self.pidfd >= 0:
            signal.pidfd_send_signal(self.pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        if self.request_w >= 0:
            os.close(self.request_w)
            self.request_w = -1
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.conn.close()
        if self.lifeline is not None:
            self.lifeline.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start(kind: str, stdio: tuple[int, int, int], user: str = "", path: str = SOCKET) -> ForkedProcess | None:
    """Ask the fork server for a child; None when it is not there (start the usual way then).

    The child waits for its request: give it with ForkedProcess.send(). A server's port is `.port`.
    """
    if not os.path.exists(path):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.settimeout(10)
    request_r, request_w = os.pipe2(os.O_CLOEXEC)
    lifeline = keep = None
    reply, got = None, []
    try:
        conn.connect(path)
        fds = [*stdio, request_r]
        if kind == "kernel":
            lifeline, keep = socket.socketpair()
            fds.append(keep.fileno())
        socket.send_fds(conn, [json.dumps({"kind": kind, "user": user}).encode()], fds)
        data, got, _, _ = socket.recv_fds(conn, 4096, 1)
        reply = json.loads(data or b'{"error": "no answer"}')
    except OSError:
        pass  # no fork server to talk to (or not for this account): reply stays None
    finally:
        os.close(request_r)
        if keep is not None:
            keep.close()
    if reply is not None and "pid" in reply and got:
        return ForkedProcess(conn, reply["pid"], got[0], request_w, lifeline, reply.get("port"))
    os.close(request_w)
    conn.close()
    if lifeline is not None:
        lifeline.close()
    if reply is None:
        return None
    raise RuntimeError(f"fork server refused {kind}: {reply.get('error')}")


def spawn(kind: str, argv: list[str], env: dict, cwd: str | None, stdio: tuple[int, int, int],
          user: str = "", path: str = SOCKET) -> ForkedProcess | None:
    """start() and send() in one, for a child whose request does not depend on its port (a kernel)."""
    proc = start(kind, stdio, user, path)
    if proc is not None:
        proc.send(argv, env, cwd)
    return proc


def _spawn_kernel(cmd: list[str], kwargs: dict) -> ForkedProcess | None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        stdio = (_fd(kwargs.get("stdin"), devnull), _fd(kwargs.get("stdout"), 1), _fd(kwargs.get("stderr"), 2))
        return spawn("kernel", cmd, kwargs.get("env") or dict(os.environ), kwargs.get("cwd"), stdio)
    finally:
        os.close(devnull)


def _fd(value, default: int) -> int:
    if value is None:
        return default
    return value if isinstance(value, int) else value.fileno()


try:
    from jupyter_client.provisioning import LocalProvisioner
except ImportError:  # the hub's own venv always has it; a bare test environment may not
    LocalProvisioner = None

if LocalProvisioner is not None:

    class ForkProvisioner(LocalProvisioner):
        """LocalProvisioner whose kernels (this Python's ipykernel) are forked by the fork server."""

        async def launch_kernel(self, cmd, **kwargs):
            try:
                proc = _spawn_kernel(cmd, kwargs) if forkable_kernel(cmd) else None
            except RuntimeError as exc:
                self.log.warning("%s; starting the kernel the usual way", exc)
                proc = None
            if proc is None:
                return await super().launch_kernel(cmd, **kwargs)
            self.log.info("Kernel forked by the fork server: pid %s", proc.pid)
            self.process, self.pid, self.pgid = proc, proc.pid, proc.pid
            return self.connection_info
