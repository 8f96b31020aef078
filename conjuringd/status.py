"""Live status: /run/conjuring/status.json for conjuringctl, STATUS= for systemd."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

import structlog

from conjuringd import atomic

log = structlog.get_logger(__name__)


class Notifier(Protocol):
    def notify(self, state: str) -> None: ...


class StatusBoard:
    """Holds the daemon's status, writes it atomically, and mirrors the phase to systemd."""

    def __init__(self, path: Path, notifier: Notifier):
        self.path = path
        self.notifier = notifier
        self._status: dict[str, Any] = {"pid": os.getpid(), "phase": "starting", "started": time.time()}
        self._alert = ""

    def phase(self, text: str) -> None:
        if self._status.get("phase") != text:
            log.info("phase", phase=text)
            self._status["phase"] = text
            self._notify_status()
        self.set(phase=text)

    def alert(self, text: str | None) -> None:
        """A standing problem shown after every phase in STATUS= (e.g. a broken machine file)."""
        if (text or "") != self._alert:
            self._alert = text or ""
            self._notify_status()

    def _notify_status(self) -> None:
        phase = self._status.get("phase", "")
        self.notifier.notify(f"STATUS={phase}; {self._alert}" if self._alert else f"STATUS={phase}")

    def set(self, **fields: Any) -> None:
        self._status.update(fields, updated=time.time())
        try:
            atomic.write_json(self.path, self._status, mode=0o640)
        except OSError as exc:
            log.warning("status_write_failed", path=str(self.path), error=str(exc))

    def get(self, key: str, default: Any = None) -> Any:
        return self._status.get(key, default)
