"""The local configuration folder, watched with watchdog (inotify).

watchdog calls us on its own thread; we only hand a wake-up to the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = structlog.get_logger(__name__)


class _Handler(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, wake: Callable[[str], None], config_dir: Path):
        self._loop = loop
        self._wake = wake
        self._machine_toml = str(config_dir / "conjuring.toml")
        self._custom = str(config_dir / "custom")

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "closed" or (event.is_directory and event.event_type == "modified"):
            return
        paths = {event.src_path, getattr(event, "dest_path", "") or event.src_path}
        if self._machine_toml in paths:
            reason = "reload: conjuring.toml"
        elif any(p.startswith(self._custom) for p in paths):
            reason = "local: custom/ edited"
        else:
            return
        self._loop.call_soon_threadsafe(self._wake, reason)


class ConfigWatcher:
    def __init__(self, config_dir: Path):
        self.config_dir = config_dir
        self._observer: Observer | None = None

    def start(self, wake: Callable[[str], None]) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        observer.schedule(_Handler(asyncio.get_running_loop(), wake, self.config_dir), str(self.config_dir),
                          recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        log.info("watching", path=str(self.config_dir))

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
