"""The classroom side jobs the reconciler starts once the hub serves.

- prewarm: with `[hub] prewarm = true`, start every student's server in the
  background after a new hub container came up (conjuringd.prewarm);
- the classroom line of `conjuringctl status`: how many students are active and
  how much memory is left, refreshed at a slow, fixed pace while the hub serves.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from conjuringd.adapters import hub_http
from conjuringd.prewarm import classroom_status, prewarm_hub, service_token
from conjuringd.reconcile.model import Desired
from conjuringd.status import StatusBoard

log = structlog.get_logger(__name__)

REFRESH_SECONDS = 60.0
_CGROUP_MEMORY = (
    "system.slice/docker-{id}.scope/memory.current",  # cgroup v2, systemd driver (Debian/Ubuntu default)
    "docker/{id}/memory.current",  # cgroup v2, cgroupfs driver
    "memory/system.slice/docker-{id}.scope/memory.usage_in_bytes",  # cgroup v1, systemd driver
    "memory/docker/{id}/memory.usage_in_bytes",  # cgroup v1, cgroupfs driver
)


def container_memory(container_id: str, cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes the container's cgroup uses now, or None if its cgroup is not where Docker puts it."""
    for pattern in _CGROUP_MEMORY:
        try:
            return int((cgroup_root / pattern.format(id=container_id)).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


def host_memory_total(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


class Classroom:
    def __init__(self, hub, status: StatusBoard):
        self.hub = hub
        self.status = status
        self._prewarm: asyncio.Task | None = None
        self._prewarmed_container = ""
        self._monitor: asyncio.Task | None = None

    def on_converged(self, desired: Desired, container_id: str) -> None:
        """Called by the reconciler after a healthy convergence (cheap: only starts tasks)."""
        if desired.settings.hub.prewarm and container_id and container_id != self._prewarmed_container:
            self._cancel(self._prewarm)
            self._prewarmed_container = container_id
            self._prewarm = asyncio.create_task(self._run_prewarm(desired), name="prewarm")
        self._cancel(self._monitor)
        if container_id:
            self._monitor = asyncio.create_task(self._watch(desired, container_id), name="classroom-status")

    async def _run_prewarm(self, desired: Desired) -> None:
        try:
            report = await prewarm_hub(self.hub, desired)
            self.status.set(prewarm={"ready": len(report.ready), "failed": len(report.failed)})
        except OSError as exc:  # the hub went away under us; the reconciler will notice and repair
            log.warning("prewarm_interrupted", error=str(exc))

    async def _watch(self, desired: Desired, container_id: str) -> None:
        while True:
            try:
                self.status.set(students=await self.snapshot(desired, container_id))
            except OSError as exc:
                log.info("classroom_status_unavailable", error=str(exc))
            await asyncio.sleep(REFRESH_SECONDS)

    async def snapshot(self, desired: Desired, container_id: str) -> dict:
        loop = asyncio.get_running_loop()
        token = await service_token(self.hub)
        code, users = await loop.run_in_executor(None, hub_http.api, self.hub.url(desired), token, "GET", "/users")
        if code != 200 or not isinstance(users, list):
            raise OSError(f"hub API answered {code}")
        used = container_memory(container_id)
        summary = classroom_status(users, used or 0, host_memory_total(), admins=[u.name for u in desired.config.admins])
        if used is None:
            summary.pop("memory_used_mb"), summary.pop("memory_headroom_mb"), summary.pop("more_students_fit")
        return summary

    async def close(self) -> None:
        for task in (self._prewarm, self._monitor):
            self._cancel(task)

    @staticmethod
    def _cancel(task: asyncio.Task | None) -> None:
        if task is not None and not task.done():
            task.cancel()
