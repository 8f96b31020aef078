"""One blocking stick operation at a time, each with a deadline.

A stick can stop answering in the middle of a read (a dying flash chip, a FUSE
helper that hangs): the thread doing the read then blocks in the kernel and
nothing in Python can interrupt it. So each operation runs in its own daemon
thread; the event loop waits for it at most `deadline` seconds, then calls
`abandon` (the adapter lazily unmounts the stick and ends its FUSE helper,
which usually wakes the thread with an error) and is free for the next stick.
A thread that stays stuck is left behind: it is a daemon thread, so it never
holds up the daemon's exit.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from conjuringd.config.problems import ConjuringError

log = structlog.get_logger(__name__)


class StickStuck(ConjuringError):
    """A stick operation did not finish within its deadline; the stick was abandoned."""


@dataclass(frozen=True)
class StickDeadlines:
    """Seconds one step on a stick may take before the stick is abandoned (all within the
    reconciler's own 900 s for an import)."""

    stage: float = 300  # mount and copy conjuring/custom (2 GiB at 10 MB/s is 200 s)
    backup: float = 480
    report: float = 60
    other: float = 120

    @classmethod
    def from_env(cls) -> "StickDeadlines":
        """CONJURINGD_DEBUG=1 and CONJURINGD_DEBUG_STICK_DEADLINE=SECONDS: every deadline that long (tests)."""
        spec = os.environ.get("CONJURINGD_DEBUG_STICK_DEADLINE", "")
        if os.environ.get("CONJURINGD_DEBUG") != "1" or not spec:
            return cls()
        seconds = float(spec)
        return cls(seconds, seconds, seconds, seconds)


def describe(exc: BaseException) -> str:
    """An unexpected exception in words for a report: its type, and its message if it has one."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StickWorker:
    def __init__(self, abandon: Callable[[], None]):
        self._abandon = abandon
        self._lock: asyncio.Lock | None = None
        self.running: str = ""  # name of the operation in progress, "" when idle

    async def run(self, deadline: float, func: Callable[..., Any], *args: Any, name: str = "a stick operation") -> Any:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            loop = asyncio.get_running_loop()
            future: asyncio.Future = loop.create_future()
            thread = threading.Thread(target=_call, args=(loop, future, func, args), name="stick-worker", daemon=True)
            self.running = name
            thread.start()
            try:
                return await asyncio.wait_for(asyncio.shield(future), deadline)
            except asyncio.TimeoutError:
                future.cancel()  # what the thread hands back later is dropped
                log.warning("stick_operation_stuck", operation=name, deadline=deadline)
                self._abandon()
                raise StickStuck(f"the stick stopped answering: {name} did not finish within {deadline:.0f} s, "
                                 "so the stick was abandoned") from None
            finally:
                self.running = ""

    def close(self) -> None:
        """At shutdown: nothing is waited for; a stick still in use is abandoned."""
        if self.running:
            log.warning("stick_operation_abandoned_at_stop", operation=self.running)
            self._abandon()


def _call(loop: asyncio.AbstractEventLoop, future: asyncio.Future, func: Callable[..., Any], args: tuple) -> None:
    try:
        result = func(*args)
    except BaseException as exc:  # handed to the waiting coroutine, which decides
        _settle(loop, future, None, exc)
    else:
        _settle(loop, future, result, None)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():
            return  # abandoned: nobody waits any more
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: the daemon stopped while this thread was stuck
