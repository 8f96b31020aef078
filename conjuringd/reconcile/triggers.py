"""What wakes the reconciler, how bursts are merged, and how it backs off."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Triggers:
    """Event sources call `wake(reason)`; the reconciler waits, debounces, then drains."""

    quiet: float = 0.3  # a burst is over after this much silence
    max_delay: float = 3.0  # ... or after this long, whatever keeps arriving
    _event: asyncio.Event = field(default_factory=asyncio.Event)
    _reasons: list[str] = field(default_factory=list)
    _last: float = 0.0

    def wake(self, reason: str) -> None:
        self._reasons.append(reason)
        self._last = time.monotonic()
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for a wake-up; True if one came, False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def settle(self) -> None:
        """After a wake-up, wait until the burst is over (debounce)."""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            remaining_quiet = self._last + self.quiet - now
            remaining_max = started + self.max_delay - now
            if remaining_quiet <= 0 or remaining_max <= 0:
                return
            await asyncio.sleep(min(remaining_quiet, remaining_max))

    def drain(self) -> tuple[str, ...]:
        reasons, self._reasons = tuple(self._reasons), []
        self._event.clear()
        return reasons

    @property
    def pending(self) -> bool:
        return self._event.is_set()


@dataclass
class Backoff:
    """Exponential back-off for transient errors; reset once a pass succeeds."""

    initial: float = 1.0
    maximum: float = 60.0
    _current: float = 0.0

    def next_delay(self) -> float:
        self._current = self.initial if self._current == 0 else min(self._current * 2, self.maximum)
        return self._current

    def reset(self) -> None:
        self._current = 0.0


@dataclass
class Heartbeat:
    """Tells the watchdog pinger whether the reconciler is alive.

    Idle (waiting for triggers) is alive. Busy is alive until the deadline of
    the step in progress; a step that overruns it, or an await that never
    returns outside any step, goes stale, and the pings stop.
    """

    _deadline: float | None = None  # None = idle
    _clock: "callable" = time.monotonic

    def idle(self) -> None:
        self._deadline = None

    def busy(self, seconds: float) -> None:
        self._deadline = self._clock() + seconds

    def fresh(self) -> bool:
        return self._deadline is None or self._clock() < self._deadline
