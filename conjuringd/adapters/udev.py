"""USB configuration sticks through udev (pyudev), mounted and read safely.

The monitor socket is read in the event loop (`loop.add_reader`): no polling,
no thread. It subscribes first and then enumerates, so a stick already
plugged in at start-up is handled like one plugged in later. Events only
record pending work and wake the reconciler; the reconciler calls
`import_stick` and `write_report`, whose blocking parts run in a
single-thread executor.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pyudev
import structlog

from conjuringd.adapters.mounts import Mounter
from conjuringd.adapters.protocols import Importer, Wake
from conjuringd.config.model import UsbSettings
from conjuringd.paths import Paths
from conjuringd.reconcile.model import ImportOutcome, ReportFacts, StickObserved
from conjuringd.sticks.copy import CopyLimits, TreeTooLarge
from conjuringd.sticks.admission import admit, conjuring_folder, enrol_inserted, enrolment_line
from conjuringd.sticks import coursework
from conjuringd.sticks.coursework import names_the_users
from conjuringd.sticks.enrol import EnrolError, Enrolment, Verdict
from conjuringd.sticks.mountinfo import needs_archive, read_mountinfo
from conjuringd.sticks.loopdev import backing_file
from conjuringd.sticks.policy import accepts, is_system_mount
from conjuringd.sticks.report import StickReport, write_atomic
from conjuringd.sticks.session import (
    StickInfo, StickSession, compose_notes, device_present, run_backup, stage_custom,
)
from conjuringd.sticks.stickfiles import render_files, write_files
from conjuringd.sticks.worker import StickDeadlines, StickStuck, StickWorker, describe

log = structlog.get_logger(__name__)

HANDLED_FILE = "sticks-handled.json"


@dataclass(frozen=True)
class _Pending:
    info: StickInfo
    key: str
    pending: str = "import"  # "import" | "report"
    order: tuple[int, int] = (0, 0)  # when it was inserted: the later insertion is imported last, and wins
    outcome: ImportOutcome | None = None
    refusals: tuple[str, ...] = ()
    backup: str = ""
    verdict: Verdict | None = None  # whether the stick may change the box (sticks/enrol.py)
    coursework: tuple[str, ...] = ()  # the report's lines about collect/ and distribute/ (sticks/coursework.py)


def stick_key(props: dict) -> str:
    """Identity of one insertion: the filesystem UUID plus what changes on every attach."""
    insertion = props.get("DISKSEQ") or props.get("USEC_INITIALIZED") or props.get("SEQNUM", "")
    return f"{props.get('ID_FS_UUID', '?')}/{insertion}"


def insertion_order(props: dict) -> tuple[int, int]:
    """Sort key of insertions: the kernel's disk sequence number (monotonic for every medium
    attached since boot), then udev's initialisation time. udev finishes events for different
    devices in any order, so the order of events is not the order of insertion."""
    def number(name: str) -> int:
        try:
            return int(props.get(name) or 0)
        except ValueError:
            return 0
    return number("DISKSEQ"), number("USEC_INITIALIZED")


class UdevSticks:
    def __init__(
        self,
        paths: Paths,
        usb_settings: Callable[[], UsbSettings],
        home_dir: Callable[[], Path],
        *,
        copy_hook: Callable[[int], None] | None = None,
        enrolment: Enrolment | None = None,
        deadlines: StickDeadlines | None = None,
    ):
        self.paths = paths
        self._usb = usb_settings
        self._home_dir = home_dir
        self._copy_hook = copy_hook or debug_copy_pause()  # tests: called after each copied file
        self._mounter = Mounter(paths.media)
        self.enrolment = enrolment or Enrolment(paths)
        self._pending: dict[str, _Pending] = {}  # by device node
        self._handled: dict[str, str] = _load_handled(paths.runtime_dir / HANDLED_FILE)  # node -> key imported
        self._deadlines = deadlines or StickDeadlines.from_env()
        self._worker = StickWorker(self._mounter.abandon)
        self._context: pyudev.Context | None = None
        self._monitor: pyudev.Monitor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: Wake = lambda reason: None
        self.counters = {"seen": 0, "imported": 0, "reports": 0, "aborted": 0, "failed": 0, "abandoned": 0}
        self.last_report: dict = {}

    # --- events -------------------------------------------------------------------

    async def start(self, wake: Wake) -> None:
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self._context = pyudev.Context()
        self._monitor = pyudev.Monitor.from_netlink(self._context, source="udev")
        self._monitor.filter_by("block")
        self._monitor.start()
        self._loop.add_reader(self._monitor.fileno(), self._on_readable)  # subscribe first ...
        self._enumerate()  # ... then look at what is already there
        log.info("udev_monitor_started", pending=len(self._pending))

    def _enumerate(self) -> None:
        assert self._context is not None
        for device in self._context.list_devices(subsystem="block"):
            self._on_event("present", device)

    def _on_readable(self) -> None:
        assert self._monitor is not None
        while True:
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as exc:
                log.warning("udev_receive_failed", error=str(exc))
                if exc.errno == errno.ENOBUFS:  # events were lost: look at everything again
                    self._enumerate()
                return
            if device is None:
                return
            self._on_event(device.action or "change", device)

    def _on_event(self, action: str, device: pyudev.Device) -> None:
        node = device.device_node
        if not node:
            return
        props = dict(device.properties)
        if action == "remove" or props.get("ID_FS_USAGE") != "filesystem" or _attr(device, "size") in ("", "0"):
            self._forget(node, "removed" if action == "remove" else "medium gone")
            return
        if action not in ("add", "change", "present"):
            return
        key = stick_key(props)
        if self._handled.get(node) == key or (node in self._pending and self._pending[node].key == key):
            return  # the same insertion again (e.g. a change event after our own write)
        verdict = self._verdict(device, props)
        if not verdict:
            log.info("device_ignored", device=node, reason=verdict.reason, fs=props.get("ID_FS_TYPE"))
            return
        info = StickInfo(node, _devno(device),
                         props.get("ID_FS_TYPE", ""), props.get("ID_FS_LABEL", ""), props.get("ID_FS_UUID", ""))
        self._pending[node] = _Pending(info, key, order=insertion_order(props))
        self.counters["seen"] += 1
        log.info("stick_seen", device=node, label=info.label, uuid=info.uuid, fs=info.fstype, key=key, via=verdict.reason, action=action)
        self._wake(f"stick {node}")

    def _forget(self, node: str, why: str) -> None:
        dropped = self._pending.pop(node, None)
        if self._handled.pop(node, None) is not None:
            self._save_handled()
        if dropped is not None:
            log.info("stick_gone", device=node, why=why, dropped=dropped.pending, label=dropped.info.label)

    def _save_handled(self) -> None:
        """Remember imported insertions across daemon restarts (not reboots: the runtime dir is a tmpfs),
        so `systemctl restart` does not re-apply a stick over a newer local edit."""
        try:
            write_atomic(self.paths.runtime_dir / HANDLED_FILE, json.dumps(self._handled).encode())
        except OSError as exc:
            log.warning("sticks_state_not_saved", error=str(exc))

    def _verdict(self, device: pyudev.Device, props: dict):
        entries = read_mountinfo()
        disk = device.find_parent("block", "disk") if device.device_type == "partition" else device
        disk = device if disk is None else disk
        mount_points = [e.mount_point for e in entries if e.dev == _devno(device) or e.source == device.device_node]
        return accepts(
            props,
            self._usb(),
            removable=_attr(disk, "removable") == "1",
            mount_points=mount_points,
            system_disk=disk.sys_name in self._system_disks(entries),
            media_dir=str(self.paths.media),
            loop_backing=backing_file(disk.device_node or "", disk.sys_path) if disk.sys_name.startswith("loop") else None,
        )

    def _system_disks(self, entries) -> set[str]:
        """Disks holding a mount of the running system (root, /boot, /var, ...)."""
        disks = set()
        for entry in entries:
            major, _, minor = entry.dev.partition(":")
            if major == "0" or not is_system_mount(entry.mount_point, str(self.paths.media)):
                continue
            try:
                dev = pyudev.Devices.from_device_number(self._context, "block", os.makedev(int(major), int(minor)))
            except (pyudev.DeviceNotFoundError, ValueError):
                continue
            parent = dev.find_parent("block", "disk") if dev.device_type == "partition" else dev
            disks.add((dev if parent is None else parent).sys_name)
        return disks

    def observe(self) -> tuple[StickObserved, ...]:
        ordered = sorted(self._pending.values(), key=lambda p: p.order)
        return tuple(StickObserved(p.info.device, p.key, p.info.label, p.pending) for p in ordered)

    def status(self) -> dict:
        """For status.json / conjuringctl status."""
        return {
            **self.counters,
            "mounted": sorted(str(e.mount_point) for e in read_mountinfo() if Path(e.mount_point).is_relative_to(self.paths.media)),
            "pending": [{"device": p.info.device, "label": p.info.label, "pending": p.pending} for p in self._pending.values()],
            "last_report": self.last_report,
        }

    # --- work the reconciler asks for ----------------------------------------------------

    async def _run(self, func, *args, **kwargs):
        """Run a blocking step in the stick worker, within that step's deadline."""
        d = self._deadlines
        deadline, name = {self._stage: (d.stage, "copying the configuration"), self._backup: (d.backup, "the home backup"),
                          self._write: (d.report, "writing the report"),
                          self._coursework: (d.backup, "collecting and distributing coursework")}.get(func, (d.other, "a stick operation"))
        return await self._worker.run(deadline, functools.partial(func, *args, **kwargs), name=name)

    def _current(self, device: str, key: str, want: str) -> _Pending | None:
        pending = self._pending.get(device)
        if pending is None or pending.key != key or pending.pending != want:
            log.info("stick_work_stale", device=device, key=key, want=want)
            return None
        return pending

    async def import_stick(self, device: str, key: str, importer: Importer) -> None:
        pending = self._current(device, key, "import")
        if pending is None:
            return
        self._handled[device] = key
        self._save_handled()
        usb = self._usb()
        staged: Path | None = None
        try:
            found = await self._run(self._stage, pending.info, usb)
            if found is None:
                self._pending.pop(device, None)
                return
            if isinstance(found, Verdict):  # not enrolled: nothing was read, nothing is given
                self._not_enrolled(pending, found)
                return
            staged, refusals, wants_backup, verdict, wants_course, switch_now = found
            source = {"kind": "stick", "device": device, "label": pending.info.label, "uuid": pending.info.uuid,
                      "switch_now": switch_now}
            outcome = await self._import(importer, staged, source)
            self.counters["imported"] += 1
            backup = ""
            if wants_backup and usb.backup and outcome.result not in ("applied", "unchanged"):
                backup = f"backup NOT written: this stick's configuration was refused ({outcome.result.upper()})"
            elif wants_backup and usb.backup and not names_the_users(outcome):
                backup = ("backup NOT written: a backup is written only for a stick that carries users.csv "
                          "(or is COMPLETE); this one was merged without it")
            elif wants_backup and usb.backup:
                backup = await self._backup_line(pending.info)
            course = await self._coursework_lines(pending.info, outcome) if wants_course else ()
            self._to_report(device, key, outcome, refusals, backup, verdict, course)
        except TreeTooLarge as exc:
            self._too_large(pending, exc)
        except StickStuck as exc:
            self._stuck(pending, exc)
        except OSError as exc:
            self._aborted(pending, exc)
        except Exception as exc:  # noqa: BLE001 - one stick's unexpected failure is that stick's report
            self._failed(pending, exc)
        finally:
            if staged is not None:
                await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, staged.parent, True)  # ours, not the stick's

    async def _import(self, importer: Importer, staged: Path, source: dict) -> ImportOutcome:
        try:
            return await importer(str(staged), source)
        except Exception as exc:  # the importer's failure is reported, it is not the stick's
            log.exception("stick_importer_failed", device=source["device"])
            return ImportOutcome("failed", message=f"import failed: {exc}")

    def _stage(self, info: StickInfo, usb: UsbSettings):
        """Blocking: mount, find conjuring/custom, check enrolment, copy it to staging, unmount.
        A Verdict back means the stick is not enrolled and nothing but conjuring/stick.key was read."""
        with StickSession(self._mounter, info) as session:
            conjuring = conjuring_folder(session.root)
            if conjuring is None:
                log.info("not_a_conjuring_stick", device=info.device, label=info.label)
                return None
            verdict = admit(self.enrolment, session, conjuring, info, usb.trust)
            if verdict.admitted and verdict.kind != "first":
                return self._copy(session, info, usb, verdict)
        if not verdict.admitted:
            return verdict
        with StickSession(self._mounter, info) as session:  # enrolled through a writable mount: copy from a read-only one
            return self._copy(session, info, usb, verdict)

    def _copy(self, session: StickSession, info: StickInfo, usb: UsbSettings, verdict: Verdict):
        layout = session.layout()
        if layout is None or layout.custom is None:
            log.info("not_a_conjuring_stick", device=info.device, label=info.label)
            return None
        limits = CopyLimits(usb.max_files, usb.max_bytes, fold_case=needs_archive(info.fstype),
                            max_file_bytes=usb.max_file_bytes)
        staged, refusals = stage_custom(layout.custom, self.paths.staging, limits, self._copy_hook)
        refusals = compose_notes(layout.conjuring) + refusals
        log.info("stick_copied", device=info.device, folder=str(staged), refused=len(refusals))
        return (staged, tuple(refusals), layout.home_backup is not None, verdict, coursework.wanted(layout.conjuring),
                layout.switch_now)

    def _not_enrolled(self, pending: _Pending, verdict: Verdict) -> None:
        info = pending.info
        log.warning("stick_not_enrolled", device=info.device, label=info.label, uuid=info.uuid, reason=verdict.reason,
                    message=f"this stick is not enrolled on this box: nothing imported; to enrol it run "
                            f"'conjuringctl enroll {info.device}' as root")
        self.counters["refused"] = self.counters.get("refused", 0) + 1
        self._to_report(info.device, pending.key, ImportOutcome("not-enrolled"), (), "", verdict)

    async def _backup_line(self, info: StickInfo) -> str:
        """The backup's line in the report; its failure never loses the import's outcome."""
        try:
            return await self._run(self._backup, info)
        except StickStuck as exc:
            self.counters["abandoned"] += 1
            return f"backup NOT written: {exc}"
        except Exception as exc:  # noqa: BLE001 - reported on the stick, in the journal with its traceback
            log.exception("backup_failed_unexpectedly", device=info.device)
            return f"backup NOT written: unexpected error: {describe(exc)}"

    def _backup(self, info: StickInfo) -> str:
        with StickSession(self._mounter, info) as session:
            layout = session.layout()
            if layout is None or layout.home_backup is None:
                return "backup NOT written: the home_backup folder is gone"
            return run_backup(session, layout.home_backup, self._home_dir())

    async def _coursework_lines(self, info: StickInfo, outcome: ImportOutcome) -> tuple[str, ...]:
        """collect/ and distribute/ under the backup's gate; a failure is the report's line, never the import's."""
        if why := coursework.refusal(outcome):
            return (f"coursework NOT collected or distributed: {why}",)
        try:
            return tuple(await self._run(self._coursework, info))
        except (StickStuck, OSError) as exc:
            return (f"coursework stopped: {getattr(exc, 'strerror', None) or exc}",)
        except Exception as exc:  # noqa: BLE001 - reported on the stick, in the journal with its traceback
            log.exception("coursework_failed_unexpectedly", device=info.device)
            return (f"coursework stopped: unexpected error: {describe(exc)}",)

    def _coursework(self, info: StickInfo) -> list[str]:
        with StickSession(self._mounter, info) as session:
            return coursework.run_coursework(session, self._home_dir(), self.paths.state_dir, self._usb())

    def _to_report(self, device: str, key: str, outcome: ImportOutcome, refusals, backup: str,
                   verdict: Verdict | None = None, course: tuple[str, ...] = ()) -> None:
        current = self._pending.get(device)
        if current is None or current.key != key:
            log.info("stick_gone_before_report", device=device, result=outcome.result)
            return
        self._pending[device] = replace(current, pending="report", outcome=outcome, refusals=tuple(refusals),
                                        backup=backup, verdict=verdict, coursework=course)
        log.info("stick_imported", device=device, result=outcome.result, config=outcome.config_hash[:12], refused=len(refusals))

    def _aborted(self, pending: _Pending, exc: OSError) -> None:
        self.counters["aborted"] += 1
        device = pending.info.device
        present = device_present(device, pending.info.dev)
        log.warning("stick_import_aborted", device=device, error=exc.strerror or str(exc), errno=exc.errno,
                    file=exc.filename, present=present)
        if present:  # not pulled: whatever went wrong, the stick is told
            where = f" ({os.fsdecode(exc.filename)})" if exc.filename else ""
            message = f"could not read the stick: {exc.strerror or exc}{where}"
            self._to_report(device, pending.key, ImportOutcome("failed", message=message), (), "")
        else:
            self._pending.pop(device, None)

    def _too_large(self, pending: _Pending, exc: TreeTooLarge) -> None:
        log.warning("stick_too_large", device=pending.info.device, error=str(exc), refused=len(exc.refusals))
        outcome = ImportOutcome("invalid", message=f"configuration refused, nothing imported: {exc}")
        self._to_report(pending.info.device, pending.key, outcome, tuple(str(r) for r in exc.refusals), "")

    def _stuck(self, pending: _Pending, exc: StickStuck) -> None:
        self.counters["abandoned"] += 1
        log.error("stick_abandoned", device=pending.info.device, label=pending.info.label, error=str(exc))
        self._to_report(pending.info.device, pending.key, ImportOutcome("failed", message=str(exc)), (), "")

    def _failed(self, pending: _Pending, exc: Exception) -> None:
        """Anything unforeseen: the stick gets a FAILED report, the journal the traceback; the
        reconciler goes on with the hub."""
        self.counters["failed"] += 1
        log.exception("stick_failed_unexpectedly", device=pending.info.device, label=pending.info.label)
        message = f"unexpected error while reading the stick: {describe(exc)} (nothing was imported)"
        self._to_report(pending.info.device, pending.key, ImportOutcome("failed", message=message), (), "")

    async def write_report(self, device: str, key: str, report: ReportFacts) -> None:
        pending = self._current(device, key, "report")
        if pending is None:
            return
        self._pending.pop(device, None)
        assert pending.outcome is not None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        files = render_files(StickReport(
            time=when, hostname=socket.gethostname(), device=device, label=pending.info.label, uuid=pending.info.uuid,
            outcome=pending.outcome, facts=report, refusals=pending.refusals, backup=pending.backup,
            enrolment=enrolment_line(pending.verdict) if pending.verdict else "", coursework=pending.coursework,
        ), pending.verdict)
        self.last_report = {"device": device, "label": pending.info.label, "result": pending.outcome.result, "written": False}
        try:
            path = await self._run(self._write, pending.info, files)
        except (OSError, StickStuck) as exc:
            log.warning("report_not_written", device=device, error=getattr(exc, "strerror", None) or str(exc))
            return
        except Exception:  # noqa: BLE001 - the report is lost, the daemon goes on
            log.exception("report_not_written", device=device)
            return
        self.counters["reports"] += 1
        self.last_report["written"] = True
        log.info("report_written", device=device, path=str(path), result=pending.outcome.result,
                 files=[name for name, _ in files])

    def _write(self, info: StickInfo, files: tuple[tuple[str, bytes], ...]) -> Path:
        if not device_present(info.device, info.dev):
            raise OSError(2, "the stick is gone")
        with StickSession(self._mounter, info, writable=True) as session:
            return write_files(session, files)

    # --- enrolment asked for by conjuringctl ---------------------------------------------------

    async def enroll(self, device: str | None) -> dict:
        """Enrol the inserted stick (or the named device), then import it as a new insertion."""
        info, key, order = self._enrol_target(device)
        stick = await self._run(enrol_inserted, self.enrolment, self._mounter, info)
        self._pending[info.device] = _Pending(info, key, order=order)
        self._wake(f"stick {info.device} enrolled")
        return {"ok": True, "id": stick.id, "device": info.device, "label": stick.label, "uuid": stick.fs_uuid}

    def _enrol_target(self, device: str | None) -> tuple[StickInfo, str, tuple[int, int]]:
        assert self._context is not None
        wanted = os.path.realpath(device) if device else None
        found, ignored = [], []
        for dev in self._context.list_devices(subsystem="block"):
            props = dict(dev.properties)
            node = dev.device_node
            if not node or (wanted and node != wanted):
                continue
            if props.get("ID_FS_USAGE") != "filesystem" or _attr(dev, "size") in ("", "0"):
                ignored.append(f"{node}: no filesystem")
                continue
            verdict = self._verdict(dev, props)
            if not verdict:
                ignored.append(f"{node}: {verdict.reason}")
                continue
            info = StickInfo(node, _devno(dev), props.get("ID_FS_TYPE", ""), props.get("ID_FS_LABEL", ""),
                             props.get("ID_FS_UUID", ""))
            found.append((info, stick_key(props), insertion_order(props)))
        if len(found) == 1:
            return found[0]
        if found:
            raise EnrolError("several sticks are inserted; name one: " + ", ".join(f[0].device for f in found))
        if wanted:
            raise EnrolError(f"{device} is not a stick this box accepts: " + ("; ".join(ignored) or "no such block device"))
        raise EnrolError("no stick is inserted (insert it, or name its device, e.g. conjuringctl enroll /dev/sdb1)")

    async def close(self) -> None:
        if self._loop is not None and self._monitor is not None:
            self._loop.remove_reader(self._monitor.fileno())
        self._monitor = None
        self._worker.close()  # never waits for a stuck stick


def _load_handled(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def debug_copy_pause() -> Callable[[int], None] | None:
    """CONJURINGD_DEBUG=1 and CONJURINGD_DEBUG_COPY_PAUSE=N:SECONDS pause the copy after N files
    (in the executor thread), so a test can pull the stick mid-copy."""
    spec = os.environ.get("CONJURINGD_DEBUG_COPY_PAUSE", "")
    if os.environ.get("CONJURINGD_DEBUG") != "1" or ":" not in spec:
        return None
    after, seconds = int(spec.split(":")[0]), float(spec.split(":")[1])

    def pause(copied: int) -> None:
        if copied == after:
            log.warning("debug_copy_pause", files=copied, seconds=seconds)
            time.sleep(seconds)

    return pause


def _attr(device: pyudev.Device, name: str) -> str:
    try:
        return device.attributes.asstring(name).strip()
    except (KeyError, UnicodeDecodeError, AttributeError):
        return ""


def _devno(device: pyudev.Device) -> str:
    return f"{os.major(device.device_number)}:{os.minor(device.device_number)}"
