"""Carry out one planned action through the adapters. Each action is idempotent."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import structlog

from conjuringd.adapters.protocols import HubAdapter, Importer, NamePublisher, NetworkAdapter, StickAdapter
from conjuringd.config.problems import BuildFailed, HubUnhealthy, TransientError
from conjuringd.hashing import changed_layers
from conjuringd.reconcile.model import (
    Action,
    ActivateNetwork,
    BuildImage,
    CheckContainer,
    Desired,
    DropStaged,
    ImportStick,
    PublishName,
    ReplaceContainer,
    ReportFacts,
    StageContainer,
    StartContainer,
    SyncFiles,
    SyncUsers,
    WithdrawName,
    WriteStickReport,
)
from conjuringd.reconcile.plan import replace_key
from conjuringd.reconcile.triggers import Heartbeat
from conjuringd.state import StateFile

log = structlog.get_logger(__name__)

# Seconds each kind of step may take before the watchdog stops trusting the loop.
DEADLINES: dict[type, float] = {
    ImportStick: 900,
    ActivateNetwork: 120,
    PublishName: 60,
    WithdrawName: 60,
    BuildImage: 4 * 3600,
    ReplaceContainer: 900,
    CheckContainer: 900,
    StageContainer: 900,
    DropStaged: 120,
    StartContainer: 300,
    SyncUsers: 300,
    SyncFiles: 600,
    WriteStickReport: 300,
}


@dataclass
class Adapters:
    hub: HubAdapter | None = None
    network: NetworkAdapter | None = None
    sticks: StickAdapter | None = None
    names: NamePublisher | None = None


@dataclass
class PassLog:
    """What a pass changed, in words, for status and stick reports."""

    changes: list[str] = field(default_factory=list)
    build_tail: tuple[str, ...] = ()
    built: bool = False  # an image was built in this pass (older ones may be pruned)
    started: float = field(default_factory=time.monotonic)  # since the last stick import began, for its report


@dataclass
class Executor:
    adapters: Adapters
    state: StateFile
    heartbeat: Heartbeat
    importer: Importer
    phase: Callable[[str], None]
    report_facts: Callable[[PassLog], Awaitable[ReportFacts]]

    async def run(self, action: Action, desired: Desired | None, passlog: PassLog) -> None:
        log.info("action", action=action.describe(), reason=action.reason)
        self.heartbeat.busy(DEADLINES[type(action)])
        try:
            await asyncio.wait_for(self._dispatch(action, desired, passlog), DEADLINES[type(action)])
        finally:
            self.heartbeat.idle()

    async def _dispatch(self, action: Action, desired: Desired | None, passlog: PassLog) -> None:
        hub, network, sticks = self.adapters.hub, self.adapters.network, self.adapters.sticks
        if isinstance(action, ImportStick):
            self.phase(f"importing configuration from {action.device}")
            passlog.changes.clear()
            passlog.started = time.monotonic()
            await sticks.import_stick(action.device, action.key, self.importer)
        elif isinstance(action, WriteStickReport):
            await sticks.write_report(action.device, action.key, await self.report_facts(passlog))
        elif isinstance(action, ActivateNetwork):
            self.phase(f"activating network {action.connection}")
            await network.activate_serve(desired.settings.network)
            passlog.changes.append(f"network {action.connection} activated")
        elif isinstance(action, PublishName):
            await self.adapters.names.publish(action.record)  # never raises: the outcome is observed
        elif isinstance(action, WithdrawName):
            await self.adapters.names.withdraw()
        elif isinstance(action, BuildImage):
            await self._build(desired, passlog)
        elif isinstance(action, ReplaceContainer):
            await self._replace(desired, passlog)
        elif isinstance(action, StageContainer):
            await self._stage(desired, passlog)
        elif isinstance(action, DropStaged):
            await hub.drop_staged(action.container_id)
            passlog.changes.append("the staged new hub was removed (no longer wanted)")
        elif isinstance(action, CheckContainer):
            await self._check(action, desired, passlog)
        elif isinstance(action, StartContainer):
            self.phase("starting hub container")
            await hub.start_container(action.container_id)
            passlog.changes.append("hub container started")
        elif isinstance(action, SyncUsers):
            self.phase("syncing users")
            await hub.sync_users(desired)
            passlog.changes.append(f"users synced live ({len(desired.config.users)} users)")
        elif isinstance(action, SyncFiles):
            self.phase("syncing shared/ and home_default/")
            await hub.sync_files(desired)
            passlog.changes.append("shared/ and home_default/ synced live")
        else:  # pragma: no cover - plan() only emits the actions above
            raise TypeError(f"unknown action {action!r}")

    async def _build(self, desired: Desired, passlog: PassLog) -> None:
        hub, network = self.adapters.hub, self.adapters.network
        previous = self.state.read().converged.get("layers") or []
        rebuilt = changed_layers(tuple(map(tuple, previous)), desired.hashes.layers)
        self.phase("building image")
        try:
            if network is not None and desired.settings.network.build:
                async with network.build_network(desired.settings.network):
                    await hub.build_image(desired, self.phase)
            else:
                await hub.build_image(desired, self.phase)
        except TransientError:
            raise  # Docker or the build network away: retried with back-off
        except BuildFailed as failure:
            self._build_failed(failure, passlog)
            return
        except Exception as exc:  # any other failure of a build is a failed build too, never an endless retry
            log.exception("build_crashed", image=desired.hashes.image[:12])
            self._build_failed(BuildFailed(desired.hashes.image, "preparing the build", (f"{type(exc).__name__}: {exc}",)),
                               passlog)
            return
        passlog.built = True
        passlog.changes.append("image built (layers: " + ", ".join(rebuilt or ("none",)) + ")")

    def _build_failed(self, failure: BuildFailed, passlog: PassLog) -> None:
        log.error("build_failed", image=failure.image_hash[:12], step=failure.step, tail=list(failure.log_tail[-5:]))
        self.state.record_failed_build(failure.image_hash, failure.step, failure.log_tail)
        passlog.changes.append(f"image build FAILED at {failure.step}; the previous hub keeps serving")
        passlog.build_tail = failure.log_tail

    async def _check(self, action: CheckContainer, desired: Desired, passlog: PassLog) -> None:
        self.phase("health-checking the hub container")
        try:
            await self.adapters.hub.check_container(desired, action.container_id, self.phase)
        except HubUnhealthy as failure:  # the adapter has already rolled back
            log.error("hub_unhealthy_rolled_back", reason=str(failure), tail=list(failure.log_tail[-5:]))
            self.state.record_failed_build(failure.key, f"hub start: {failure}", failure.log_tail)
            passlog.changes.append(f"the hub an interrupted replacement left did not start ({failure}); "
                                   "rolled back to the previous one")
            passlog.build_tail = failure.log_tail
            return
        passlog.changes.append("the hub an interrupted replacement left passed its health check")

    async def _replace(self, desired: Desired, passlog: PassLog) -> None:
        self.phase("replacing hub container")
        try:
            await self.adapters.hub.replace_container(desired, self.phase)
        except (HubUnhealthy, BuildFailed) as failure:  # the adapter has already rolled back
            log.error("hub_unhealthy_rolled_back", reason=str(failure), tail=list(failure.log_tail[-5:]))
            key = replace_key(desired.hashes.image, desired.hashes.restart)
            self.state.record_failed_build(key, f"hub start: {failure}", failure.log_tail)
            passlog.changes.append(f"new hub did not start ({failure}); rolled back to the previous one")
            passlog.build_tail = failure.log_tail
            return
        self.state.update(switch_requested=False)
        passlog.changes.append("hub container replaced (restart)")

    async def _stage(self, desired: Desired, passlog: PassLog) -> None:
        self.phase("starting the new hub beside the serving one")
        try:
            await self.adapters.hub.stage_container(desired, self.phase)
        except HubUnhealthy as failure:  # the serving hub was never touched
            log.error("staged_hub_unhealthy", reason=str(failure), tail=list(failure.log_tail[-5:]))
            self.state.record_failed_build(failure.key, f"hub start: {failure}", failure.log_tail)
            passlog.changes.append(f"new hub did not start ({failure}); the serving hub goes on")
            passlog.build_tail = failure.log_tail
            return
        passlog.changes.append("new hub started beside the serving one; it takes over when the class is idle")
