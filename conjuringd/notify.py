"""systemd notification: READY/STATUS/STOPPING via sdnotify, and the watchdog pinger."""

from __future__ import annotations

import asyncio
import os

import sdnotify
import structlog

from conjuringd.reconcile.triggers import Heartbeat

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Thin wrapper: silent when not run by systemd (no NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None
        if self._notifier is not None and self._notifier.socket is not None:
            # Never let a full notify socket block the event loop: drop the message instead.
            self._notifier.socket.setblocking(False)

    def notify(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


async def ping_watchdog(notifier: SystemdNotifier, heartbeat: Heartbeat, interval: float) -> None:
    """Ping at `interval` while the reconciler's heartbeat is fresh; stop pinging when it is not."""
    stale_logged = False
    while True:
        if heartbeat.fresh():
            notifier.notify("WATCHDOG=1")
            stale_logged = False
        elif not stale_logged:
            log.error("watchdog_withheld", reason="reconciler step overran its deadline")
            stale_logged = True
        await asyncio.sleep(interval)
