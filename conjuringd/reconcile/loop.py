"""The reconciler: the only thing that changes the world.

Event sources call `wake()`. The loop waits for a wake-up, lets the burst
settle, then runs a pass: import what changed at the sources, then observe,
plan and execute until the plan is empty, and record convergence. Transient
errors back off (a new wake-up cuts the wait short); configuration errors wait
for new input.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from conjuringd.config.load import load_custom
from conjuringd.config.machine import MachineSettings
from conjuringd.config.problems import ConfigError, Severity, TransientError
from conjuringd.hashing import config_hashes, digest
from conjuringd.passwords import GeneratedPasswords, generated_logins
from conjuringd.reconcile.describe import describe_source, network_status
from conjuringd.reconcile.execute import Adapters, Executor, PassLog
from conjuringd.reconcile.model import ActivateNetwork, Desired, ImportOutcome, NetworkObserved, Observed, ReportFacts
from conjuringd.reconcile.names import host_addresses, name_status
from conjuringd.reconcile.plan import pending_switch, plan
from conjuringd.reconcile.triggers import Backoff, Heartbeat, Triggers
from conjuringd.reconcile.waiting import SwitchWatch
from conjuringd.sheet import class_sheet, wifi_of
from conjuringd.status import StatusBoard
from conjuringd.store import SnapshotStore, config_digest
from conjuringd import urls

log = structlog.get_logger(__name__)

# Sources merged onto the active configuration (unless they hold the COMPLETE marker, see merge.py);
# the local folder /etc/conjuring/custom is root's whole configuration and replaces it.
MERGED_SOURCES = frozenset({"stick", "conjuringctl"})
MAX_STEPS = 12  # observe/plan/execute rounds in one pass before giving up as not converging
OBSERVE_DEADLINE = 60.0


@dataclass
class ApplyRequest:
    folder: Path
    source: dict
    done: asyncio.Future  # resolves to an ImportOutcome
    merge: bool = True


class Reconciler:
    def __init__(self, store: SnapshotStore, adapters: Adapters, status: StatusBoard, triggers: Triggers,
                 heartbeat: Heartbeat, hub_enabled: bool):
        self.store = store
        self.paths = store.paths
        self.adapters = adapters
        self.status = status
        self.triggers = triggers
        self.heartbeat = heartbeat
        self.hub_enabled = hub_enabled
        self.backoff = Backoff()
        self._pass_ids = itertools.count(1)
        self._applies: list[ApplyRequest] = []
        self._desired_cache: tuple[str, Desired | None] = ("", None)
        self._machine_seen: MachineSettings | None = None  # the machine settings last reported
        self._hang = False
        self.classroom = None  # conjuringd.classroom.Classroom when the hub is managed
        self._network_problem: str | None = None  # NetworkManager trouble in this pass
        self._network_needs_input = False
        self._network_backoff = Backoff(initial=5.0, maximum=300.0)
        self._network_retry: asyncio.TimerHandle | None = None
        self.switch_watch = SwitchWatch(self.wake)
        self.executor = Executor(adapters, store.state, heartbeat, self.import_folder, status.phase, self._report_facts)

    # --- inputs -------------------------------------------------------------

    def wake(self, reason: str) -> None:
        self.triggers.wake(reason)

    def request_apply(self, folder: Path, source: dict, *, merge: bool = True) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        self._applies.append(ApplyRequest(folder, source, done, merge))
        self.wake("apply")
        return done

    def request_hang(self) -> None:
        """Debug fault: the next pass awaits forever (tests the watchdog)."""
        self._hang = True
        self.wake("debug-hang")

    async def import_folder(self, folder: str | Path, source: dict, merge: bool | None = None) -> ImportOutcome:
        """Import `folder`; sticks and `conjuringctl apply` are merged onto the active configuration
        (`merge` None: decided by the source's kind)."""
        loop = asyncio.get_running_loop()
        source = dict(source)
        if source.pop("switch_now", False):  # a stick carrying conjuring/SWITCH-NOW: a waiting new hub takes over
            self.store.state.update(switch_requested=True)
        layered = source.get("kind") in MERGED_SOURCES if merge is None else merge
        try:
            outcome = await loop.run_in_executor(
                None, functools.partial(self.store.import_folder, Path(folder), source, merge=layered))
        except OSError as exc:  # the source vanished or broke mid-copy: nothing was activated
            outcome = ImportOutcome("failed", message=f"could not read the configuration: {exc}")
        self._log_outcome(outcome, source)
        return outcome

    # --- the loop -----------------------------------------------------------

    async def startup(self) -> None:
        """Import the local folder if it changed while we were away, and look at the world once."""
        try:
            await self._import_local()
            desired = self.desired()
            observed = await self.observe(desired)
            log.info("startup_observed", config=desired.hashes.config[:12] if desired else None,
                     plan=[a.describe() for a in plan(desired, observed)])
        except (TransientError, ConfigError) as exc:
            log.warning("startup_observation_incomplete", error=str(exc))

    async def run(self) -> None:
        while True:
            await self.triggers.wait()
            await self.triggers.settle()
            reasons = self.triggers.drain()
            await self.run_pass(reasons)

    async def run_pass(self, reasons: tuple[str, ...]) -> None:
        pass_id = next(self._pass_ids)
        structlog.contextvars.bind_contextvars(pass_id=pass_id, trigger=",".join(sorted(set(reasons))))
        try:
            await self._pass(reasons)
            self.backoff.reset()
        except TransientError as exc:
            delay = self.backoff.next_delay()
            log.warning("transient_error", error=str(exc), retry_in=delay)
            self.status.phase(f"waiting {delay:.0f}s to retry: {exc}")
            self.status.set(last_error=str(exc))
            if not await self.triggers.wait(timeout=delay):
                self.wake("retry")
        except ConfigError as exc:
            log.error("config_error", error=str(exc))
            self.status.phase("waiting for a valid configuration")
            self.status.set(last_error=str(exc))
        except Exception as exc:  # a bug or an unforeseen failure: keep the traceback, retry later
            delay = self.backoff.next_delay()
            log.exception("unexpected_error", retry_in=delay)
            self.status.phase(f"unexpected error, retrying in {delay:.0f}s")
            self.status.set(last_error=f"unexpected: {exc!r}")
            if not await self.triggers.wait(timeout=delay):
                self.wake("retry")
        finally:
            structlog.contextvars.unbind_contextvars("pass_id", "trigger")

    async def _pass(self, reasons: tuple[str, ...]) -> None:
        log.info("pass_start")
        if self._hang:
            self.heartbeat.busy(0)
            await asyncio.get_running_loop().create_future()  # never resolves
        await self._import_sources(reasons)
        passlog = PassLog()
        self._network_problem = None
        self._network_needs_input = False  # a network configuration error: wait for new input, no retry
        for _ in range(MAX_STEPS):
            desired = self.desired()
            observed = await self.observe(desired)
            if desired is not None:  # before a long build: conjuringctl status names the box meanwhile
                self._name_status(desired, observed, urls.hub_urls(observed.network, desired.settings.hub.port))
            actions = plan(desired, observed)
            if not actions:
                self._converged(desired, observed, passlog)
                if passlog.built:
                    await self._prune_images(desired)
                return
            for action in actions:
                try:
                    await self.executor.run(action, desired, passlog)
                except (TransientError, ConfigError) as exc:
                    if not isinstance(action, ActivateNetwork):
                        raise
                    # The hub does not wait for the network: students on a wired LAN can still reach it.
                    log.warning("network_activation_failed", connection=action.connection, error=str(exc))
                    self._network_problem = str(exc)
                    self._network_needs_input = isinstance(exc, ConfigError)
        raise TransientError(f"did not converge after {MAX_STEPS} rounds")

    async def _import_sources(self, reasons: tuple[str, ...]) -> None:
        if any(r.startswith(("local", "startup", "reload")) for r in reasons):
            await self._import_local()
        applies, self._applies = self._applies, []
        for request in applies:
            outcome = await self.import_folder(request.folder, request.source, request.merge)
            if not request.done.done():
                request.done.set_result(outcome)

    async def _import_local(self) -> None:
        local = self.paths.local_custom
        if not local.is_dir():
            log.warning("local_config_missing", path=str(local))
            return
        loop = asyncio.get_running_loop()
        local_digest = await loop.run_in_executor(None, config_digest, local)
        state = self.store.state.read()
        if local_digest == state.local_digest and state.active:
            return
        outcome = await self.import_folder(local, {"kind": "local", "path": str(local)})
        if outcome.result in ("applied", "unchanged"):
            self.store.state.update(local_digest=local_digest)

    def _log_outcome(self, outcome: ImportOutcome, source: dict) -> None:
        errors = [str(p) for p in outcome.problems if p.severity is Severity.ERROR]
        for problem in outcome.problems:
            (log.error if problem.severity is Severity.ERROR else log.warning)("config_problem", problem=str(problem))
        log.info("import", result=outcome.result, source=source.get("kind"), config=outcome.config_hash[:12],
                 errors=len(errors), warnings=len(outcome.problems) - len(errors))
        if outcome.result == "invalid":
            self.status.set(last_error=f"configuration from {source.get('kind')} is invalid: {len(errors)} error(s)",
                            problems=errors)
        elif outcome.result == "failed":
            self.status.set(last_error=f"import from {source.get('kind')} failed: {outcome.message}")
        elif outcome.result == "applied":
            self.status.set(problems=[], last_error=None)

    # --- desired and observed ---------------------------------------------------

    def machine(self) -> MachineSettings:
        """The machine settings in effect; a broken machine file is reported once per change and
        never stops anything (the last good machine settings, or the defaults, are used)."""
        machine = self.store.machine.current()
        if machine != self._machine_seen:
            was_broken = self._machine_seen is not None and self._machine_seen.broken
            self._machine_seen = machine
            self._report_machine(machine, was_broken)
        return machine

    def _report_machine(self, machine: MachineSettings, was_broken: bool) -> None:
        if machine.broken:
            for problem in machine.problems:
                log.error("machine_config_problem", problem=str(problem))
            log.warning("machine_config_fallback", path=machine.path, using=machine.source)
            self.status.set(machine_error=machine.summary(), machine_problems=[str(p) for p in machine.problems])
            self.status.alert(machine.summary())
            return
        for problem in machine.problems:  # warnings only
            log.warning("machine_config_problem", problem=str(problem))
        if was_broken:
            log.info("machine_config_fixed", path=machine.path)
        if self.status.get("machine_error") or was_broken:
            self.status.set(machine_error=None, machine_problems=[])
        self.status.alert(None)

    def desired(self) -> Desired | None:
        machine = self.machine()
        state = self.store.state.read()
        if not state.active:
            return None
        key = digest(state.active, machine.raw)
        if self._desired_cache[0] == key:
            return self._desired_cache[1]
        folder = self.store.snapshot_dir(state.active)
        config, problems = load_custom(folder, machine)
        if config is None:
            raise ConfigError(problems)
        config = GeneratedPasswords(self.paths.secrets).resolve(config)  # made once per box, then kept
        desired = Desired(config_hashes(config, state.active), config, str(folder), self.hub_enabled)
        self._desired_cache = (key, desired)
        return desired

    async def observe(self, desired: Desired | None) -> Observed:
        hub, network, sticks = self.adapters.hub, self.adapters.network, self.adapters.sticks
        self.heartbeat.busy(OBSERVE_DEADLINE)
        try:
            hub_observed = await asyncio.wait_for(hub.observe(), OBSERVE_DEADLINE) if hub else None
            net_observed = None
            if network is not None and desired is not None:
                net_observed = await self._observe_network(network, desired.settings.network)
            names = None
            if self.adapters.names is not None:
                wanted = host_addresses(net_observed, urls.local_ipv4_addresses)
                names = await asyncio.wait_for(self.adapters.names.observe(wanted), OBSERVE_DEADLINE)
        except asyncio.TimeoutError as exc:
            raise TransientError("observation timed out") from exc
        finally:
            self.heartbeat.idle()
        state = self.store.state.read()
        return Observed(hub_observed, net_observed, frozenset(state.failed_builds), sticks.observe() if sticks else (),
                        names, switch_requested=state.switch_requested)

    async def _observe_network(self, network, spec) -> NetworkObserved:
        """NetworkManager being away or failing never holds up the hub; it is retried with back-off."""
        if self._network_problem is not None:
            return NetworkObserved(spec.serve, "failed")
        try:
            return await asyncio.wait_for(network.observe(spec), OBSERVE_DEADLINE)
        except TransientError as exc:
            self._network_problem = str(exc)
            return NetworkObserved(spec.serve, "unavailable")

    def _schedule_network_retry(self) -> None:
        if self._network_retry is not None:
            self._network_retry.cancel()
            self._network_retry = None
        if self._network_problem is None:
            self._network_backoff.reset()
            if self.status.get("network_error"):
                self.status.set(network_error=None)
            return
        self.status.set(network_error=self._network_problem)
        if self._network_needs_input:
            return
        delay = self._network_backoff.next_delay()
        log.warning("network_retry_scheduled", error=self._network_problem, retry_in=delay)
        self._network_retry = asyncio.get_running_loop().call_later(delay, self.wake, "retry: network")

    async def _prune_images(self, desired: Desired) -> None:
        """Keep the images of every snapshot still in the store (instant switch back); drop older ones."""
        keep = {desired.hashes.image}
        machine = self.machine()
        for snapshot in self.store.snapshots():
            config, _ = load_custom(snapshot, machine)
            if config is not None:
                keep.add(config_hashes(config, snapshot.name).image)
        await self.adapters.hub.prune_images(frozenset(keep))

    # --- results ------------------------------------------------------------------

    def _converged(self, desired: Desired | None, observed: Observed, passlog: PassLog) -> None:
        self._schedule_network_retry()
        if desired is None:
            self.status.phase("no configuration yet")
            return
        hold = self.switch_watch.update(desired, observed)
        self.status.set(switch_waiting=hold.describe() if hold else None)
        if hold is not None:  # the serving hub is not the desired one yet: nothing is recorded as converged
            self.status.set(converged=False, changes=passlog.changes)
            self.status.phase(hold.describe())
            return
        hashes = desired.hashes
        failed = observed.failed_builds
        healthy = hashes.image not in failed and f"{hashes.image}:{hashes.restart}" not in failed
        state = self.store.state.read()
        if state.switch_requested:  # nothing waits (any more): a later change waits for the class again
            state = self.store.state.update(switch_requested=False)
        if healthy:
            self.store.state.update(converged={
                "config": hashes.config, "image": hashes.image, "restart": hashes.restart,
                "users": hashes.users, "files": hashes.files, "layers": [list(layer) for layer in hashes.layers],
            })
            self.store.mark_good(hashes.config)
        hub_urls = urls.hub_urls(observed.network, desired.settings.hub.port)
        users = len(desired.config.users)
        sticks = self.adapters.sticks
        if sticks is not None and hasattr(sticks, "status"):
            stick_status = sticks.status()
            self.status.set(sticks={k: v for k, v in stick_status.items() if k != "last_report"},
                            last_report=stick_status.get("last_report"))
        wifi = wifi_of(desired.settings.network, observed.network)
        self.status.set(hub_port=desired.settings.hub.port, wifi={"ssid": wifi.ssid, "own_hotspot": wifi.own},
                        address=urls.student_address(self.status.get("mdns_name"), desired.settings.hub.port, hub_urls))
        self.status.set(active_config=hashes.config, active_source=state.active_source, hub_urls=list(hub_urls),
                        users=users, admins=len(desired.config.admins), network=network_status(observed),
                        converged=healthy, changes=passlog.changes)
        name = self.status.get("mdns_name")  # set by this pass's last observation
        if not self.hub_enabled:
            self.status.phase(f"configuration {hashes.config[:12]} active (hub not managed)"
                              + (f", box reachable as {name}" if name else ""))
        elif healthy:
            where = (f" at {hub_urls[0]}" if hub_urls else "") + (f" as {name}" if name else "")
            on = f" on {observed.network.serve}" if observed.network and observed.network.state == "activated" else ""
            self.status.set(last_error=None)  # before the phase: a reader of status.json sees both or neither
            self.status.phase(f"serving {users} users{where}{on}")
            container = observed.hub.container if observed.hub else None
            if self.classroom is not None and container is not None:
                self.classroom.on_converged(desired, container.id)
        else:
            self.status.set(last_error=f"configuration {hashes.config[:12]} failed to build or start")
            self.status.phase("serving the previous hub: the new configuration failed (see last_error)")
        log.info("converged", config=hashes.config[:12], image=hashes.image[:12], healthy=healthy)

    def _name_status(self, desired: Desired, observed: Observed, hub_urls: tuple[str, ...]) -> None:
        fields = name_status(desired.settings.network.name, observed.names, hub_urls)
        if fields.get("mdns_error") != self.status.get("mdns_error") and fields.get("mdns_error"):
            log.warning("mdns_problem", problem=fields["mdns_error"])
        if fields["mdns_name"] and fields["mdns_name"] != self.status.get("mdns_name"):
            log.info("mdns_published", name=fields["mdns_name"], addresses=list(observed.names.record.addresses))
        self.status.set(**fields)

    async def _report_facts(self, passlog: PassLog) -> ReportFacts:
        desired = self.desired()
        observed = await self.observe(desired)
        state = self.store.state.read()
        if desired is None:
            return ReportFacts(hub_state="no configuration active")
        failed = desired.hashes.image in observed.failed_builds
        hub_state = "hub not managed" if not self.hub_enabled else ("build failed" if failed else "serving")
        hub_urls = urls.hub_urls(observed.network, desired.settings.hub.port)
        address = urls.student_address(self.status.get("mdns_name"), desired.settings.hub.port, hub_urls)
        students = self.status.get("students") or {}
        made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        hold = pending_switch(desired, observed)
        hub_state = hold.describe() if hold is not None else hub_state
        return ReportFacts(
            hub_state=hub_state,
            hub_urls=hub_urls, address=address, seconds=time.monotonic() - passlog.started,
            students_online=students.get("students_active"), students_recent=students.get("students_recent"),
            sheet=class_sheet(desired.config, observed.network, address, socket.gethostname(), made),
            users=len(desired.config.users), admins=len(desired.config.admins),
            changes=tuple(passlog.changes), build_log_tail=passlog.build_tail,
            active_config=state.active, active_source=describe_source(state.active_source),
            generated_logins=tuple((u.name, u.password, u.admin) for u in generated_logins(desired.config)),
        )

