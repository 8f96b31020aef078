"""conjuringd: the long-running daemon (systemd Type=notify)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import structlog

from conjuringd import __version__, captive, logs
from conjuringd.adapters.fswatch import ConfigWatcher
from conjuringd.config.machine import MachineSource
from conjuringd.config.model import HubSettings
from conjuringd.config.problems import ConfigError
from conjuringd.control import ControlServer
from conjuringd.notify import SystemdNotifier, ping_watchdog, watchdog_interval
from conjuringd.paths import Paths
from conjuringd.reconcile.execute import Adapters
from conjuringd.reconcile.loop import Reconciler
from conjuringd.reconcile.triggers import Heartbeat, Triggers
from conjuringd.status import StatusBoard
from conjuringd.sticks.enrol import Enrolment
from conjuringd.store import SnapshotStore

log = structlog.get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="conjuringd", description="Classroom JupyterHub appliance daemon.")
    defaults = Paths()
    parser.add_argument("--state-dir", type=Path, default=defaults.state_dir)
    parser.add_argument("--config-dir", type=Path, default=defaults.config_dir,
                        help="holds conjuring.toml and the watched custom/ folder")
    parser.add_argument("--runtime-dir", type=Path, default=defaults.runtime_dir)
    parser.add_argument("--default-custom", type=Path, default=defaults.default_custom,
                        help="shipped configuration copied to <config-dir>/custom when that is absent")
    parser.add_argument("--hub", choices=("docker", "none"), default="docker")
    parser.add_argument("--network", choices=("nm", "none"), default="nm")
    parser.add_argument("--usb", choices=("udev", "none"), default="udev")
    parser.add_argument("--dnsmasq-shared-dir", type=Path, default=Path(captive.DROPIN_DIR),
                        help="NetworkManager's drop-in folder for the dnsmasq of shared connections (captive portal)")
    parser.add_argument("--mdns", choices=("avahi", "none"), default="avahi",
                        help="publish [network] name (conjuring.local) through avahi-daemon on the system bus")
    parser.add_argument("--log-format", choices=("auto", "console", "logfmt", "json"), default="auto")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--version", action="version", version=f"conjuringd {__version__}")
    return parser.parse_args(argv)


def seed_local_config(paths: Paths) -> None:
    """First start: the local configuration is a copy of the shipped default."""
    if paths.local_custom.exists() or not paths.default_custom.is_dir():
        return
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(paths.default_custom, paths.local_custom, symlinks=True)
    users = paths.local_custom / "users.csv"
    if users.is_file() and not users.is_symlink():
        users.chmod(0o600)  # the teacher's passwords: root-only, as in the snapshots
    log.info("seeded_local_config", source=str(paths.default_custom), path=str(paths.local_custom))


def build_adapters(args: argparse.Namespace, paths: Paths, reconciler_settings, enrolment=None) -> Adapters:
    adapters = Adapters()
    if args.hub == "docker":
        from conjuringd.adapters.docker import DockerHub

        adapters.hub = DockerHub(paths)
    if args.network == "nm":
        from conjuringd.adapters.captive import CaptiveNetwork
        from conjuringd.adapters.captive_dns import DropIn
        from conjuringd.adapters.nm import NetworkManagerAdapter

        adapters.network = CaptiveNetwork(NetworkManagerAdapter(), reconciler_settings.hub_port,
                                          dropin=DropIn(args.dnsmasq_shared_dir))
    if args.mdns == "avahi":
        from conjuringd.adapters.avahi import AvahiPublisher

        adapters.names = AvahiPublisher()
    if args.usb == "udev":
        from conjuringd.adapters.udev import UdevSticks

        adapters.sticks = UdevSticks(paths, reconciler_settings.usb, reconciler_settings.home_dir, enrolment=enrolment)
    return adapters


class _LiveSettings:
    """Settings the stick adapter reads at event time. Both are machine-only (a stick cannot
    set them), so they come from the machine settings in effect: never from a stick, and a
    broken machine file gives the last good ones instead of an exception."""

    def __init__(self, paths: Paths, machine: MachineSource):
        self.paths = paths
        self.machine = machine
        self.reconciler = None  # set once it exists (hub_port)

    def usb(self):
        return self.machine.current().settings.usb

    def home_dir(self) -> Path:
        configured = self.machine.current().settings.hub.home_dir
        return Path(configured) if configured else self.paths.home

    def hub_port(self) -> int:
        """The hub port the captive portal redirects to: the applied configuration's (a stick may
        set it), read when a request comes; the default before anything is applied or when broken."""
        desired = None
        if self.reconciler is not None:
            try:
                desired = self.reconciler.desired()
            except (ConfigError, OSError, ValueError):
                pass  # the reconcile pass reports it; the default port is the best guess meanwhile
        return desired.settings.hub.port if desired is not None else HubSettings().port


async def run(args: argparse.Namespace) -> int:
    paths = Paths(args.state_dir, args.config_dir, args.runtime_dir, args.default_custom)
    for folder in (paths.state_dir, paths.runtime_dir, paths.configs, paths.staging):
        folder.mkdir(parents=True, exist_ok=True)
    paths.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    notifier = SystemdNotifier()
    status = StatusBoard(paths.status_file, notifier)
    status.phase("starting")
    seed_local_config(paths)
    store = SnapshotStore(paths)
    store.clean_leftovers()
    live = _LiveSettings(paths, store.machine)
    enrolment = Enrolment(paths)  # one record of enrolled sticks, for the stick adapter and conjuringctl
    adapters = build_adapters(args, paths, live, enrolment)
    heartbeat, triggers = Heartbeat(), Triggers()
    reconciler = Reconciler(store, adapters, status, triggers, heartbeat, hub_enabled=adapters.hub is not None)
    live.reconciler = reconciler
    reconciler.machine()  # a broken machine file is reported before anything else happens
    if args.hub == "docker":
        from conjuringd.classroom import Classroom

        reconciler.classroom = Classroom(adapters.hub, status)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reconciler.wake, "reload: SIGHUP")
    watcher = ConfigWatcher(paths.config_dir)
    watcher.start(reconciler.wake)  # subscribe first ...
    control = ControlServer(paths.wake_socket, reconciler, enrolment)
    await control.start()
    for adapter in (adapters.network, adapters.names, adapters.sticks):
        if adapter is not None:
            await adapter.start(reconciler.wake)
    await reconciler.startup()  # ... then look at what is already there
    reconciler.wake("startup")
    notifier.notify("READY=1")
    log.info("ready", version=__version__, hub=args.hub, network=args.network, usb=args.usb, mdns=args.mdns)
    tasks = [asyncio.create_task(reconciler.run(), name="reconciler")]
    interval = watchdog_interval()
    if interval:
        tasks.append(asyncio.create_task(ping_watchdog(notifier, heartbeat, interval), name="watchdog"))
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0 if stopper in done else 1
    for task in done:
        if task is not stopper and task.exception():
            log.error("task_died", task=task.get_name(), exc_info=task.exception())
    notifier.notify("STOPPING=1")
    status.phase("stopping")
    log.info("stopping")
    for task in [stopper, *tasks]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    watcher.stop()
    await control.close()
    if reconciler.classroom is not None:
        await reconciler.classroom.close()
    for adapter in (adapters.hub, adapters.network, adapters.names, adapters.sticks):
        if adapter is not None:
            await adapter.close()
    return exit_code


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    os.umask(0o022)
    code = asyncio.run(run(args))
    # Everything we own is saved atomically by now. A blocking call still running in a worker thread
    # (a docker build streaming for minutes) is abandoned, not waited for: the next start re-plans it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
