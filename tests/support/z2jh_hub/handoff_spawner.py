"""A JupyterHub spawner that hands a server's pod spec (command and environment) to the test.

Runs inside the stand-in hub container. Where KubeSpawner would create a pod with
args = Spawner.cmd + get_args() and env = get_env() (plus JUPYTER_IMAGE*), this
writes them to /srv/handoff/<user>.json and waits for the test (tests/support/z2jh.py),
which starts the exported image with exactly those, as the kubelet would, and answers
with the server's URL in <user>.ready.
"""

import asyncio
import json
import os
from pathlib import Path

from jupyterhub.spawner import Spawner

HANDOFF = Path("/srv/handoff")


class HandoffSpawner(Spawner):
    def _file(self, ext):
        return HANDOFF / f"{self.user.name}.{ext}"

    def get_env(self):
        env = super().get_env()
        env["JUPYTER_IMAGE_SPEC"] = env["JUPYTER_IMAGE"] = os.environ["SINGLEUSER_IMAGE"]
        return env

    async def start(self):
        for ext in ("ready", "stop", "failed"):
            self._file(ext).unlink(missing_ok=True)
        spec = {"args": list(self.cmd) + self.get_args(), "env": self.get_env()}
        tmp = self._file("tmp")
        tmp.write_text(json.dumps(spec))
        tmp.rename(self._file("json"))
        while not self._file("ready").exists():
            if self._file("failed").exists():
                raise RuntimeError(f"the pod failed: {self._file('failed').read_text()}")
            await asyncio.sleep(0.5)
        return self._file("ready").read_text().strip()

    async def poll(self):
        return None if self._file("ready").exists() else 0

    async def stop(self, now=False):
        self._file("ready").unlink(missing_ok=True)
        self._file("stop").write_text("")
