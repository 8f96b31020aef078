# "ours" experiment (tests/bench/classroom.py), loaded after conjuringd's configuration:
# servers start at most one per CPU at a time; the others wait in line and see their place.
import asyncio
import os

from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.utils import wait_for_http_server


class QueuedSpawner(LocalProcessSpawner):
    """A LocalProcessSpawner whose starts take turns: at most `slots` servers boot at once."""

    line = []  # users waiting for a slot, in order (class-wide: one hub process)
    slots = None
    slot_count = os.cpu_count() or 1

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
            ip, port = await super().start()
            url = f"http://{ip}:{port}{self.server.base_url}api"
            await wait_for_http_server(url, timeout=self.http_timeout)
            return ip, port
        finally:
            cls.slots.release()

    async def progress(self):
        name = self.user.name
        while name in type(self).line:
            ahead = type(self).line.index(name)
            yield {"progress": 10, "message": f"Waiting in line to start your server: {ahead} ahead of you"}
            await asyncio.sleep(2)
        yield {"progress": 50, "message": "Starting your server"}


c.JupyterHub.spawner_class = QueuedSpawner  # noqa: F821
c.JupyterHub.concurrent_spawn_limit = 0  # noqa: F821 - the line above does the limiting, without refusing anyone
