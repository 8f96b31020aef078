"""The staged hub and the class's activity, for the docker adapter (a mixin of DockerHub).

A new hub that must wait for the class runs beside the serving one as `<name>-next`,
on the spare host port `[hub] port + 1`, with a data folder of its own (two hubs never
share one JupyterHub database). It is found again by its name and labels after a
daemon restart; whether it passed its health check is kept in `<state>/hub/staged.json`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from datetime import datetime, timezone

import docker.errors
import structlog

from conjuringd.adapters import hub_http
from conjuringd.adapters.docker_health import NotHealthy
from conjuringd.adapters.docker_labels import CONTAINER_PORT, PROBE_NAME, container_labels, container_state, host_port
from conjuringd.adapters.hub_files import write_atomic
from conjuringd.adapters.protocols import Progress
from conjuringd.config.problems import HubUnhealthy, TransientError
from conjuringd.reconcile.model import ContainerState, Desired
from conjuringd.reconcile.plan import replace_key
from conjuringd.reconcile.switch import Activity, StudentActivity

log = structlog.get_logger(__name__)

LABEL_STAGED_AT = "org.conjuring.staged-at"
ACTIVITY_TIMEOUT = 3.0  # seconds for each question to the serving hub
ACTIVITY_BUDGET = 15.0  # seconds for all of them in one observation (well inside the reconciler's deadline)


def staged_port(port: int) -> int:
    return port + 1 if port < 65535 else port - 1


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def student_activity(user: dict, kernels: list[dict]) -> StudentActivity:
    """One user of the hub's REST API (`GET /users`) and their server's kernels (`GET /api/kernels`)."""
    times = [_parse_time(user.get("last_activity"))]
    times += [_parse_time(s.get("last_activity")) for s in (user.get("servers") or {}).values()]
    times += [_parse_time(k.get("last_activity")) for k in kernels]  # the hub learns of these only every 5 minutes
    in_use = sum(1 for k in kernels if int(k.get("connections") or 0) > 0 or k.get("execution_state") == "busy")
    known = [t for t in times if t is not None]
    return StudentActivity(user.get("name", ""), max(known) if known else None, in_use)


class StagedHub:
    """Staging a new hub, observing it and the class."""

    @property
    def staged_name(self) -> str:
        return f"{self.name}-next"

    def _staged_checked(self) -> dict:
        try:
            return json.loads((self.hub_dir / "staged.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _observe_staged(self, client, get) -> tuple[ContainerState | None, datetime | None]:
        staged = get(client, self.staged_name)
        if staged is None:
            return None, None
        state = container_state(staged.id, staged.labels, staged.status, self._staged_checked(), self._owner())
        return state, _parse_time(staged.labels.get(LABEL_STAGED_AT))

    def _observe_activity(self, container) -> Activity | None:
        """Who is working on the serving hub; None when it is not running (nobody to keep)."""
        if container is None or container.status != "running":
            return None
        now = datetime.now().astimezone()
        port = host_port(container.attrs, 0)
        try:
            token = (self.secrets_dir / "service-token").read_text().strip()
            if not port or not token:
                return Activity(now, None, "the serving hub has no port or token")
            base = f"http://127.0.0.1:{port}"
            status, users = hub_http.api(base, token, "GET", "/users?state=active&limit=200", timeout=ACTIVITY_TIMEOUT)
            if status != 200 or not isinstance(users, list):  # only users with a server: nobody else has work to lose
                return Activity(now, None, f"GET /users answered {status}")
            deadline = time.monotonic() + ACTIVITY_BUDGET
            return Activity(now, tuple(self._student(base, token, u, deadline) for u in users
                                          if not u.get("admin") and u.get("name") != PROBE_NAME))
        except (OSError, ValueError) as exc:
            return Activity(now, None, str(exc))

    @staticmethod
    def _student(base: str, token: str, user: dict, deadline: float) -> StudentActivity:
        """A server that cannot list its kernels (slow, broken, out of time) counts as in use: never a lesson lost."""
        if not (user.get("servers") or {}).get("", {}).get("ready"):
            return student_activity(user, [])
        if time.monotonic() > deadline:
            return replace(student_activity(user, []), kernels_in_use=1)
        session = hub_http.HubSession(base, ACTIVITY_TIMEOUT)
        try:
            status, _, body = session.request("GET", f"/user/{user['name']}/api/kernels",
                                              headers={"Authorization": f"token {token}"})
            kernels = json.loads(body) if status == 200 else None
        except (OSError, ValueError):
            kernels = None
        if not isinstance(kernels, list):
            return replace(student_activity(user, []), kernels_in_use=1)
        return student_activity(user, kernels)

    async def stage_container(self, desired: Desired, progress: Progress) -> None:
        """Start the new hub beside the serving one and health-check it; it is removed again if it fails."""
        progress("starting the new hub beside the serving one")
        await self.drop_staged()  # an older one, or one a stopped daemon left unchecked
        volumes = await self._io(self._prepare, desired)
        data = self.hub_dir / "data-staged"
        await self._io(lambda: (shutil.rmtree(data, ignore_errors=True), data.mkdir(mode=0o700, parents=True)))
        volumes = {host: bind for host, bind in volumes.items() if bind["bind"] != "/srv/jupyterhub"}
        volumes[str(data)] = {"bind": "/srv/jupyterhub", "mode": "rw"}  # two hubs never share one database
        staged_id = await self._call(self._create_staged, desired, volumes)
        try:
            await self._call(lambda c: c.containers.get(staged_id).start())
            await self._wait_healthy(staged_id, desired, probe=True)
        except Exception as exc:  # the serving hub was never touched: only the staged one goes
            tail = exc.tail if isinstance(exc, NotHealthy) else (str(exc),)
            await self.drop_staged()
            if isinstance(exc, TransientError):
                raise
            raise HubUnhealthy(replace_key(desired.hashes.image, desired.hashes.restart),
                               f"new hub did not start beside the serving one: {exc}", tail) from exc
        await self._io(lambda: write_atomic(self.hub_dir / "staged.json",
                                            json.dumps({staged_id: {"checked": True}}).encode(), 0o600))
        log.info("hub_staged", container=staged_id[:12], image=desired.hashes.image[:12])

    def _create_staged(self, client, desired: Desired, volumes: dict) -> str:
        hashes = desired.hashes
        labels = container_labels(hashes.image, hashes.restart, hashes.config, self._owner())
        labels[LABEL_STAGED_AT] = datetime.now(timezone.utc).isoformat()
        spec = self._container_spec(desired, volumes)
        spec.update(name=self.staged_name, labels=labels, restart_policy={"Name": "no"},
                    ports={f"{CONTAINER_PORT}/tcp": staged_port(desired.settings.hub.port)})
        return client.containers.create(**spec).id

    async def drop_staged(self, container_id: str = "") -> None:
        """Remove the staged hub (and its data folder)."""
        def drop(client):
            shutil.rmtree(self.hub_dir / "data-staged", ignore_errors=True)
            try:
                client.containers.get(container_id or self.staged_name).remove(force=True)
                log.info("hub_staged_removed", container=(container_id or self.staged_name)[:12])
            except docker.errors.NotFound:
                pass
        await self._call(drop)
