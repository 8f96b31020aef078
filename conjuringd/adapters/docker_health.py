"""Health checks and rollback for the docker adapter, and the check of a hub an interrupted replacement left.

A mixin of DockerHub (conjuringd.adapters.docker): it uses the adapter's executor
(`_call`, `_io`), its names and its recorded facts (`_record`, `_probe`).
"""

from __future__ import annotations

import asyncio
import time

import docker.errors
import structlog

from conjuringd.adapters import hub_http
from conjuringd.adapters.docker_labels import LABEL_IMAGE, LABEL_RESTART, PROBE_NAME, host_port
from conjuringd.adapters.protocols import Progress
from conjuringd.config.problems import ConjuringError, HubUnhealthy, TransientError
from conjuringd.reconcile.model import Desired
from conjuringd.reconcile.plan import replace_key

log = structlog.get_logger(__name__)


class NotHealthy(ConjuringError):
    """Internal: the new hub did not answer; replace_container rolls back and raises HubUnhealthy."""

    def __init__(self, message: str, tail: tuple[str, ...] = ()):
        self.tail = tail
        super().__init__(message)


class HubHealth:
    """Waiting for a hub to answer, rolling back to the previous one, checking one left unchecked."""

    async def _roll_back_and_raise(self, desired: Desired, new_id: str, old_id: str, exc: Exception,
                                   key: str, what: str) -> None:
        """The previous hub comes back; then a transient error goes on as it is, anything else is HubUnhealthy."""
        await self._rollback(desired, new_id, old_id, exc)
        if isinstance(exc, TransientError):
            raise exc
        tail = exc.tail if isinstance(exc, NotHealthy) else (str(exc),)
        raise HubUnhealthy(key, f"{what}: {exc}", tail) from exc

    async def _rollback(self, desired: Desired, new_id: str, old_id: str, exc: Exception) -> None:
        log.error("hub_unhealthy_rollback", container=new_id[:12], error=str(exc)[:300], previous=old_id[:12])

        def undo(client):
            try:
                client.containers.get(new_id).remove(force=True)
            except docker.errors.NotFound:
                pass
            if old_id:
                old = client.containers.get(old_id)
                old.rename(self.name)
                old.start()

        try:
            await self._call(undo)
        except (TransientError, docker.errors.APIError) as again:
            log.error("hub_rollback_failed", container=old_id[:12], error=str(again)[:300])
            return
        if old_id:
            try:
                await self._wait_healthy(old_id, desired, probe=False)
                log.info("hub_rolled_back", container=old_id[:12])
            except (NotHealthy, TransientError) as again:
                log.error("hub_rollback_unhealthy", container=old_id[:12], error=str(again)[:300])

    async def _wait_healthy(self, container_id: str, desired: Desired, probe: bool) -> None:
        deadline = time.monotonic() + desired.settings.hub.health_timeout
        while time.monotonic() < deadline:
            status, restarts, port = await self._call(self._status, container_id, desired.settings.hub.port)
            base = f"http://127.0.0.1:{port}"  # the container's own port: an older hub may use another
            if status in ("exited", "dead", "restarting") or restarts:
                raise NotHealthy(f"hub container {status} (restarts: {restarts})", await self._logs_tail(container_id))
            if await self._io(hub_http.health, base) and (not probe or await self._io(self._probe_login, base)):
                return
            await asyncio.sleep(0.5)
        raise NotHealthy(f"hub did not answer within {desired.settings.hub.health_timeout}s",
                           await self._logs_tail(container_id))

    @staticmethod
    def _status(client, container_id: str, port: int) -> tuple[str, int, int]:
        """Status, restart count and host port of a container (`port` when it binds none)."""
        container = client.containers.get(container_id)
        return container.status, int(container.attrs.get("RestartCount") or 0), host_port(container.attrs, port)

    def _probe_login(self, base: str) -> bool:
        probe = self._probe()
        return hub_http.HubSession(base, timeout=10).login(probe["name"], probe["password"]) == 302

    def _forget_probe(self, base: str) -> None:
        """Drop the probe account from the hub's user list, so teachers never see it (best effort)."""
        token = (self.secrets_dir / "service-token").read_text().strip()
        try:
            status, _ = hub_http.api(base, token, "DELETE", f"/users/{PROBE_NAME}")
        except OSError as exc:
            status = str(exc)
        if status not in (204, 404):
            log.warning("probe_user_not_removed", status=status)

    async def _logs_tail(self, container_id: str) -> tuple[str, ...]:
        try:
            raw = await self._call(lambda c: c.containers.get(container_id).logs(tail=20))
        except (docker.errors.APIError, TransientError):
            return ()
        return tuple(raw.decode("utf-8", "replace").splitlines())

    async def check_container(self, desired: Desired, container_id: str, progress: Progress) -> None:
        """Health-check a container an interrupted replacement left unchecked; roll back if it fails."""
        progress("health-checking the hub container left by an interrupted replacement")
        labels, previous_id = await self._call(self._check_facts, container_id)
        key = replace_key(labels.get(LABEL_IMAGE, ""), labels.get(LABEL_RESTART, ""))
        try:
            status, _, port = await self._call(self._status, container_id, desired.settings.hub.port)
            if status != "running":
                if previous_id:  # it may still hold the port
                    await self._call(lambda c: c.containers.get(previous_id).stop(timeout=10))
                await self._call(lambda c: c.containers.get(container_id).start())
            await self._wait_healthy(container_id, desired, probe=True)
            await self._io(lambda: self._record(container_id, checked=True))
        except Exception as exc:  # whatever went wrong, the previous hub comes back first
            await self._roll_back_and_raise(desired, container_id, previous_id, exc, key,
                                            "hub left by an interrupted replacement did not start")
        await self._io(self._forget_probe, f"http://127.0.0.1:{port}")
        if previous_id:
            await self._call(lambda c: c.containers.get(previous_id).remove(force=True))
        log.info("hub_checked", container=container_id[:12], previous_removed=previous_id[:12])

    def _check_facts(self, client, container_id: str) -> tuple[dict, str]:
        """Labels of the container to check, and the id of the previous hub kept beside it ('' if none)."""
        previous = get_container(client, self.previous_name)
        return client.containers.get(container_id).labels, previous.id if previous is not None else ""


def get_container(client, name: str):
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None
