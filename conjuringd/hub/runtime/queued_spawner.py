"""A LocalProcessSpawner for a whole class logging in at once: queued, not refused, and no port races.

A single-user server spends its start-up CPU in its first seconds; starting
thirty at once on two cores makes every one of them slow, and JupyterHub's own
`concurrent_spawn_limit` answers the extra students with an error page (429).
Here at most `slot_count` servers boot at the same time; the others wait in
line and the spawn-pending page shows them their place. A slot is held until
the new server answers HTTP (its start-up work is done) or its process exits.

Ports: JupyterHub picks a random free port that the server binds seconds later;
with a class starting at once another server or a kernel may take it first and
the server dies ("didn't respond in 240 seconds"), and a student listening on a
classmate's port would be sent the classmate's requests. A forked server gets
a listening socket that the root fork server bound for it on a port below 1024
(which no student can bind in the hub container), so whatever answers there is
that server. A server started the usual way gets a fixed port from the
student's stable UID, and counts as ready only when every listener on that port
belongs to the student (/proc/net/tcp). A server that exits while starting
fails its spawn at once instead of after http_timeout.

Start-up cost: when the container's fork server runs (conjuring_forkserver),
the server is forked from it with Jupyter already imported, and its kernels
are forked the same way (kernel provisioner "conjuring-forkserver"); without
it, or for a command it does not run, the server starts as LocalProcessSpawner
starts it.
Imported by jupyterhub_config.py; runs inside the hub process (one event loop).
"""

import asyncio
import os
import pwd
import time

import conjuring_forkclient
from listeners import listener_uids
from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Any

HUB_STARTED = time.monotonic()
FORK_SERVER_GRACE = 30  # seconds after the hub started in which a spawn waits for the fork server to be ready
PORT_BASE = 10000  # + uid % 20000: ports 10000-29999, below Linux's ephemeral range (32768-60999)


class QueuedSpawner(LocalProcessSpawner):
    line = []  # names waiting for a slot, first come first served (class-wide: one hub process)
    slots = None
    slot_count = os.cpu_count() or 1
    proc = Any(allow_none=True, help="the Popen, or the fork server's ForkedProcess, of the server")

    async def start(self):
        cls = type(self)
        if cls.slots is None:
            cls.slots = asyncio.Semaphore(cls.slot_count)
        cls.line.append(self.user.name)
        try:
            await cls.slots.acquire()
        finally:
            cls.line.remove(self.user.name)
        try:
            ip, port, owner = await self._launch()
            await self._answering(ip, port, owner)
            return ip, port
        finally:
            cls.slots.release()

    def get_env(self):
        env = super().get_env()
        env["JUPYTER_DEFAULT_PROVISIONER_NAME"] = "conjuring-forkserver"  # falls back to a plain start by itself
        env["CONJURING_SPARE_KERNEL"] = "1"  # conjuring_spare: the first notebook's kernel is started in advance
        env["JUPYTER_RUNTIME_DIR"] = self._runtime_dir()
        return env

    def get_args(self):
        # kernels talk to their server over Unix sockets in the student's runtime folder, not TCP ports: a
        # class starting thirty kernels at once drew colliding random ports (a kernel died, its websocket 404)
        # and the first notebook's kernel is started in advance (conjuring_spare)
        return [*super().get_args(), "--KernelManager.transport=ipc",
                "--ServerApp.kernel_manager_class=conjuring_spare.SpareKernelManager"]

    def _runtime_dir(self):
        """/run/user/<uid>, the student's own: short enough for kernel socket paths (at most 107 bytes)."""
        account = pwd.getpwnam(self.user.name)
        path = f"/run/user/{account.pw_uid}"
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chown(path, account.pw_uid, account.pw_gid)
        os.chmod(path, 0o700)
        return path

    async def _launch(self):
        """Fork the server from the fork server; start it as LocalProcessSpawner does when that is not possible.
        Returns its address and the uid every listener on it must have (None: the socket was bound for it)."""
        account = pwd.getpwnam(self.user.name)
        proc = None
        # these choose what jupyterhub.singleuser imports, which the fork server did already without them
        chosen_at_import = any(key in self.get_env() for key in ("JUPYTERHUB_SINGLEUSER_APP", "JUPYTERHUB_SINGLEUSER_EXTENSION"))
        if not self.shell_cmd and not chosen_at_import:
            await self._fork_server_ready()
            try:
                proc = conjuring_forkclient.start("server", (0, 1, 2), user=self.user.name)
            except RuntimeError as exc:
                self.log.warning("%s; starting the server of %s the usual way", exc, self.user.name)
        if proc is None:
            self.port = PORT_BASE + account.pw_uid % 20000
            ip, port = await super().start()
            return ip, port, account.pw_uid
        self.port = proc.port
        proc.send([*self.cmd, *self.get_args()], self.get_env(), account.pw_dir)  # with the port it was given
        self.log.info("Forked the server of %s from the fork server: pid %s, port %s", self.user.name, proc.pid, proc.port)
        self.proc, self.pid = proc, proc.pid
        return (self.ip or "127.0.0.1", self.port, None)

    async def _fork_server_ready(self):
        """Just after the container started the fork server is still importing (about 2 s): the first logins
        wait for it rather than start the slow way. Later, no socket means no fork server."""
        while not os.path.exists(conjuring_forkclient.SOCKET) and time.monotonic() - HUB_STARTED < FORK_SERVER_GRACE:
            await asyncio.sleep(0.1)

    async def _answering(self, ip, port, owner):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        while loop.time() < deadline:
            status = await self.poll()
            if status is not None:
                raise RuntimeError(f"the server of {self.user.name} exited while starting (status {status})")
            self._only_the_students(port, owner)
            try:
                reader, writer = await asyncio.open_connection(ip, port)
                writer.write(f"GET {self.server.base_url}api HTTP/1.0\r\n\r\n".encode())
                answered = await asyncio.wait_for(reader.read(5), 2)
                writer.close()
                # who answered: the socket the fork server bound for this server, or (started the usual way)
                # a listener of the student's, the only one on the port, checked after the answer came
                if answered == b"HTTP/" and (owner is None or listener_uids(port) == {owner}):
                    return
            except (OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.2)

    def _only_the_students(self, port, owner):
        strangers = set() if owner is None else listener_uids(port) - {owner}
        if strangers:
            raise RuntimeError(f"port {port} of {self.user.name}'s server is held by another account "
                               f"(uid {', '.join(map(str, sorted(strangers)))}); not routing to it")

    async def progress(self):
        name = self.user.name
        while name in type(self).line:
            ahead = type(self).line.index(name)
            yield {"progress": 10, "message": f"Waiting in line to start your server: {ahead} ahead of you"}
            await asyncio.sleep(2)
        yield {"progress": 50, "message": "Starting your server"}

