"""One kernel started ahead in a student's server: the first notebook the student opens adopts it.

A jupyter_server extension (enabled in the image) with its kernel manager (set
by conjuringd's spawner, which also sets CONJURING_SPARE_KERNEL=1). Once the server is up, it starts one kernel of
the default kind in the student's home folder. The first request for a kernel
of that kind in that folder (opening a notebook, or the kernels API) gets it
at once instead of waiting for a kernel to start; the spare is not replaced,
so a student never holds more kernels than they use. A request for another
kind or folder starts a kernel as usual and leaves the spare for later. With
prewarm, the spare is started before class with the server. Left running
unused, it is one idle kernel, stopped with the server by the idle culler.
"""

from __future__ import annotations

import asyncio
import os

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

ENABLE = "CONJURING_SPARE_KERNEL"


class SpareKernelManager(AsyncMappingKernelManager):
    """AsyncMappingKernelManager whose first default kernel in the root folder is started in advance."""

    _spare: asyncio.Task | None = None

    def start_spare(self) -> None:
        if self._spare is None and os.environ.get(ENABLE) == "1":
            self._spare = asyncio.ensure_future(self._start_new(path="", kernel_name=self.default_kernel_name))

    async def _start_new(self, **kwargs) -> str:
        return await super().start_kernel(**kwargs)

    async def start_kernel(self, *, kernel_id=None, path=None, **kwargs):
        if self._spare is not None and kernel_id is None and self._fits(path, kwargs.get("kernel_name")):
            spare, self._spare = self._spare, None
            try:
                adopted = await spare
            except Exception as exc:  # noqa: BLE001 - the spare failed to start: start one the usual way
                self.log.warning("The spare kernel did not start (%s); starting a new one", exc)
            else:
                if adopted in self:
                    self.log.info("Kernel %s (started in advance) handed to the first request", adopted)
                    return adopted
        return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)

    def _fits(self, path, kernel_name) -> bool:
        same_kind = kernel_name in (None, "", self.default_kernel_name)
        return same_kind and self.cwd_for_path(path or "") == self.cwd_for_path("")


def _jupyter_server_extension_points():
    return [{"module": "conjuring_spare"}]


def _load_jupyter_server_extension(serverapp) -> None:
    pass  # nothing to add before the server starts: the spare waits for the event loop


async def _start_jupyter_server_extension(serverapp) -> None:
    if isinstance(serverapp.kernel_manager, SpareKernelManager):
        serverapp.kernel_manager.start_spare()
