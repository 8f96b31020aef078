"""The hub through the Docker Engine API (docker SDK 5.0.3): images, the `conjuring` container, live syncs.

Every blocking SDK call runs in one single-thread executor. Docker being
unreachable raises TransientError; a failed build raises BuildFailed; a new hub
that does not become healthy is rolled back, then HubUnhealthy is raised. The live
hashes applied to a container, and whether it passed its health check, are recorded
in `<state>/hub/applied.json` (labels are immutable), keyed by container id.

Only a container whose owner label matches this state folder and hub token is ours
(observed as `ours`); one left by an interrupted replacement is observed as not
`checked`, and check_container() health-checks it or rolls back to the previous one.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets as secrets_mod
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
import structlog

from conjuringd.adapters import docker_build
from conjuringd.adapters.docker_labels import (
    CONTAINER_NAME,
    CONTAINER_PORT,
    LABEL_IMAGE,
    PROBE_NAME,
    container_labels,
    container_resources,
    container_state,
    hub_settings,
    image_tag,
    users_spec,
)
from conjuringd.adapters.docker_health import HubHealth, get_container as _get
from conjuringd.adapters.docker_switch import StagedHub
from conjuringd.adapters.hub_files import mirror_tree, write_atomic
from conjuringd.adapters.protocols import Progress
from conjuringd.config.problems import TransientError
from conjuringd.hashing import owner_digest
from conjuringd.hub.dockerfile import render
from conjuringd.passwords import GeneratedPasswords
from conjuringd.paths import Paths
from conjuringd.reconcile.model import Desired, HubObserved
from conjuringd.reconcile.plan import replace_key
from conjuringd.distribute import seed_new_homes
from conjuringd.uids import PROBE_UID, UidMap

log = structlog.get_logger(__name__)

_UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)


class DockerHub(HubHealth, StagedHub):
    def __init__(self, paths: Paths, client_factory=docker.from_env, container_name: str = CONTAINER_NAME):
        self.paths = paths
        self.name = container_name  # tests use their own, so they never touch a real hub
        self.previous_name = f"{container_name}-previous"  # PREVIOUS_NAME for the real hub
        self._factory = client_factory
        self._client = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docker")
        self.hub_dir = paths.state_dir / "hub"
        self.secrets_dir = paths.secrets / "hub"
        self.uids = UidMap(paths.state_dir / "uids.json")
        self.last_build = None  # BuildProgress of the last build (steps, cached steps)
        self.last_downtime = 0.0  # seconds between stopping the old hub and the new one answering

    # --- plumbing ---------------------------------------------------------------

    def _guarded(self, fn, *args, **kwargs):
        try:
            if self._client is None:
                self._client = self._factory()
                self._client.api.timeout = 900  # builds stream for minutes
            return fn(self._client, *args, **kwargs)
        except _UNREACHABLE as exc:
            self._reset()
            raise TransientError(f"docker unreachable: {exc}") from exc
        except docker.errors.APIError as exc:
            if exc.is_server_error() and "No such" not in str(exc):
                self._reset()
                raise TransientError(f"docker error: {exc}") from exc
            raise
        except docker.errors.DockerException as exc:
            self._reset()
            raise TransientError(f"docker unreachable: {exc}") from exc

    def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except (OSError, requests.exceptions.RequestException, docker.errors.DockerException) as exc:
                log.debug("docker_client_close_failed", error=str(exc))  # it was broken already

    async def _call(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._guarded(fn, *args, **kwargs))

    async def _io(self, fn, *args):
        """Blocking work that needs no docker client (files, HTTP)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- observe ---------------------------------------------------------------

    async def observe(self) -> HubObserved:
        return await self._call(self._observe)

    def _observe(self, client) -> HubObserved:
        images = frozenset(
            img.labels.get(LABEL_IMAGE, "") for img in client.images.list(filters={"label": LABEL_IMAGE})
        ) - {""}
        container = _get(client, self.name)
        staged, staged_at = self._observe_staged(client, _get)
        if container is None:
            return HubObserved(images=images, staged=staged, staged_at=staged_at)
        state = container_state(container.id, container.labels, container.status, self._applied(), self._owner())
        activity = self._observe_activity(container) if state.ours else None
        return HubObserved(images=images, container=state, staged=staged, staged_at=staged_at, activity=activity)

    def _owner(self) -> str:
        """This box's owner label value; '' while there is no hub token (then no container is ours)."""
        try:
            token = (self.secrets_dir / "service-token").read_text().strip()
        except FileNotFoundError:
            return ""
        return owner_digest(self.paths.state_dir, token) if token else ""

    # --- applied live hashes -----------------------------------------------------

    def _applied(self) -> dict:
        try:
            return json.loads((self.hub_dir / "applied.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _record(self, container_id: str, **facts: str | bool) -> None:
        applied = self._applied()
        applied = {container_id: {**applied.get(container_id, {}), **facts}}  # only the live container matters
        write_atomic(self.hub_dir / "applied.json", json.dumps(applied, indent=1).encode(), 0o600)

    # --- build -------------------------------------------------------------------

    async def build_image(self, desired: Desired, progress: Progress) -> None:
        progress("building image: resolving base")
        started = time.monotonic()
        base = await self._call(docker_build.resolve_base, desired)
        rendered = render(desired.config, desired.hashes.image, base=base)
        self.last_build = await self._call(docker_build.build, desired, rendered, progress)
        log.info("build_done", image=desired.hashes.image[:12], steps=self.last_build.total,
                 cached=len(self.last_build.cached), seconds=round(time.monotonic() - started, 1))

    async def prune_images(self, keep: frozenset[str]) -> None:
        await self._call(self._prune, keep)

    def _prune(self, client, keep: frozenset[str]) -> None:
        in_use = {c.labels.get(LABEL_IMAGE) for c in (_get(client, self.name), _get(client, self.staged_name)) if c}
        for img in client.images.list(filters={"label": LABEL_IMAGE}):
            image_hash = img.labels.get(LABEL_IMAGE, "")
            if image_hash in keep or image_hash in in_use:
                continue
            try:
                client.images.remove(img.id)
                log.info("image_pruned", image=image_hash[:12])
            except docker.errors.APIError as exc:
                log.warning("image_prune_failed", image=image_hash[:12], error=str(exc)[:200])

    # --- run-time files ------------------------------------------------------------

    def _source(self, desired: Desired) -> Path:
        snapshot = Path(desired.config_dir) if desired.config_dir else None
        return snapshot if snapshot is not None and snapshot.is_dir() else Path(desired.config.root)

    def _probe(self) -> dict:
        path = self.secrets_dir / "probe-password"
        if not path.exists():
            write_atomic(path, secrets_mod.token_urlsafe(24).encode(), 0o600)
        return {"name": PROBE_NAME, "password": path.read_text().strip(), "admin": False, "uid": PROBE_UID}

    def _write_users(self, desired: Desired) -> None:
        self.paths.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in (self.paths.secrets, self.secrets_dir):
            folder.chmod(0o700)
        token = self.secrets_dir / "service-token"
        if not token.exists():
            write_atomic(token, secrets_mod.token_hex(32).encode(), 0o600)
        uids = self.uids.assign([u.name for u in desired.config.users])
        config = GeneratedPasswords(self.paths.secrets).resolve(desired.config)  # the reconciler did already
        spec = users_spec(config, uids, self._probe())
        write_atomic(self.secrets_dir / "users.json", json.dumps(spec).encode(), 0o600)

    def _write_files(self, desired: Desired) -> int:
        source = self._source(desired)
        return mirror_tree(source / "shared", self.hub_dir / "shared") + mirror_tree(
            source / "home_default", self.hub_dir / "home_default"
        )

    def _prepare(self, desired: Desired) -> dict:
        """Write everything the container mounts; return the volume spec."""
        self._write_users(desired)
        self._write_files(desired)
        run = self.hub_dir / "run" / desired.hashes.restart
        write_atomic(run / "settings.json", json.dumps(hub_settings(desired.settings.hub)).encode())
        # the teacher's srv/ may hold secrets (a TLS key): root-only in the container as on the host; the
        # entrypoint (runtime/srvcopy.py) copies all of it into /srv/jupyterhub
        mirror_tree(self._source(desired) / "srv", run / "srv", 0o600, 0o700)
        write_atomic(run / "srv" / "jupyterhub_config.py", desired.config.hub_config, 0o600)
        data = self.hub_dir / "data"
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        homes = Path(desired.settings.hub.home_dir or self.paths.home)
        homes.mkdir(parents=True, exist_ok=True)
        return {
            str(homes): {"bind": "/home", "mode": "rw"},
            str(self.secrets_dir): {"bind": "/run/conjuring/secrets", "mode": "ro"},
            str(run): {"bind": "/run/conjuring/hub", "mode": "ro"},
            str(self.hub_dir / "shared"): {"bind": "/shared", "mode": "ro"},
            str(self.hub_dir / "home_default"): {"bind": "/srv/conjuring/home_default", "mode": "ro"},
            str(data): {"bind": "/srv/jupyterhub", "mode": "rw"},
        }

    def _forget_run_dirs(self, keep: str) -> None:
        """Remove run-time settings folders of restart hashes no container uses any more."""
        for folder in (self.hub_dir / "run").iterdir():
            if folder.name != keep and folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)

    # --- container -------------------------------------------------------------------

    def url(self, desired: Desired) -> str:
        return f"http://127.0.0.1:{desired.settings.hub.port}"

    async def replace_container(self, desired: Desired, progress: Progress) -> None:
        progress("replacing hub container")
        await self.drop_staged()  # it proved the new hub starts; the one that serves gets the hub's port and data
        volumes = await self._io(self._prepare, desired)
        old_id = await self._call(self._set_aside)
        try:
            new_id = await self._call(self._create, desired, volumes)
            log.info("hub_created", container=new_id[:12], previous=old_id[:12])
        except Exception:
            if old_id:  # nothing was stopped yet: just give the serving hub its name back
                await self._call(lambda c: c.containers.get(old_id).rename(self.name))
            raise
        stopped_at = time.monotonic()
        try:
            if old_id:
                await self._call(lambda c: c.containers.get(old_id).stop(timeout=10))
                stopped_at = time.monotonic()
            await self._call(lambda c: c.containers.get(new_id).start())
            progress("waiting for the new hub to answer")
            await self._wait_healthy(new_id, desired, probe=True)
            await self._io(lambda: self._record(new_id, checked=True))
        except Exception as exc:  # whatever went wrong, the previous hub comes back first
            await self._roll_back_and_raise(desired, new_id, old_id, exc,
                                            replace_key(desired.hashes.image, desired.hashes.restart), "new hub did not start")
        self.last_downtime = time.monotonic() - stopped_at
        await self._io(self._forget_probe, self.url(desired))
        await self._io(lambda: self._record(new_id, users=desired.hashes.users, files=desired.hashes.files))
        await self._io(self._forget_run_dirs, desired.hashes.restart)
        if old_id:
            await self._call(lambda c: c.containers.get(old_id).remove(force=True))
        log.info("hub_replaced", container=new_id[:12], image=desired.hashes.image[:12],
                 downtime=round(self.last_downtime, 1))
        await self._io(self._seed_homes, desired)

    def _set_aside(self, client) -> str:
        """Rename the current container out of the way (kept until its successor is healthy)."""
        current, previous = _get(client, self.name), _get(client, self.previous_name)
        if previous is not None:
            if current is not None and self._applied().get(current.id, {}).get("checked") is not True:
                current.remove(force=True)  # never health-checked: the previous one is the last good hub
                current = None
            if current is None:  # an interrupted replace: the previous one is the last good hub
                previous.rename(self.name)
                current = previous
            else:
                previous.remove(force=True)
        if current is None:
            return ""
        current.rename(self.previous_name)
        return current.id

    def _create(self, client, desired: Desired, volumes: dict) -> str:
        return client.containers.create(**self._container_spec(desired, volumes)).id

    def _container_spec(self, desired: Desired, volumes: dict) -> dict:
        hashes = desired.hashes
        return dict(
            image=image_tag(hashes.image),
            name=self.name,
            labels=container_labels(hashes.image, hashes.restart, hashes.config, self._owner()),
            init=True,
            restart_policy={"Name": "unless-stopped"},
            ports={f"{CONTAINER_PORT}/tcp": desired.settings.hub.port},
            volumes=volumes,
            # Nothing in the container gains privileges through exec (a setuid-root file in a
            # home, a crafted restore): the hub itself is root and drops to students by setuid(2),
            # which this does not affect. Docker's API cannot mount a rw bind nosuid (see README).
            security_opt=["no-new-privileges"],
            # Docker lets every account bind any port (ip_unprivileged_port_start=0). Back to 1024: the
            # fork server binds each student's server below it, where no classmate can listen first.
            sysctls={"net.ipv4.ip_unprivileged_port_start": "1024"},
            detach=True,
            **container_resources(desired.settings.hub),
        )

    async def start_container(self, container_id: str) -> None:
        await self._call(lambda c: c.containers.get(container_id).start())
        log.info("hub_started", container=container_id[:12])

    # --- live syncs --------------------------------------------------------------------

    async def sync_users(self, desired: Desired) -> None:
        await self._io(self._write_users, desired)
        # new homes are seeded from the desired home_default/, even when SyncFiles comes after
        await self._io(mirror_tree, self._source(desired) / "home_default", self.hub_dir / "home_default")
        container_id, code, output = await self._call(self._exec_provision)
        if code != 0:
            raise TransientError(f"provisioning users failed (exit {code}): {output[-300:]}")
        log.info("users_synced", container=container_id[:12], summary=output.strip()[-300:])
        await self._io(self._seed_homes, desired)  # homes created just now get what was distributed
        await self._io(lambda: self._record(container_id, users=desired.hashes.users))

    def _seed_homes(self, desired: Desired) -> None:
        """Distributed folders (conjuringd/distribute.py) into the homes that have not had them yet."""
        try:
            seeded = seed_new_homes(self.paths.state_dir, Path(desired.settings.hub.home_dir or self.paths.home), self.uids.known())
        except OSError as exc:
            log.warning("distribution_not_seeded", error=exc.strerror or str(exc), file=exc.filename)
            return
        for result in seeded:
            log.info("distribution_seeded", folder=result.folder, lines=result.lines())

    def _exec_provision(self, client) -> tuple[str, int, str]:
        container = client.containers.get(self.name)
        code, output = container.exec_run(["/usr/bin/python3", "/opt/conjuring/runtime/provision.py", "--api"])
        return container.id, code, output.decode("utf-8", "replace")

    async def sync_files(self, desired: Desired) -> None:
        changed = await self._io(self._write_files, desired)
        container_id = await self._call(lambda c: c.containers.get(self.name).id)
        log.info("files_synced", container=container_id[:12], changed=changed)
        await self._io(lambda: self._record(container_id, files=desired.hashes.files))

    async def close(self) -> None:
        """Never waits for a step in progress (a build can stream for minutes): the daemon is stopping."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._reset()
