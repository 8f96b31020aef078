"""While a new hub waits beside the serving one for the class: its status line and the timer that looks again.

The decision itself is pure (conjuringd.reconcile.plan.pending_switch, conjuringd.reconcile.switch);
this only remembers the one timer, so the reconciler wakes without sleeping in its loop.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import structlog

from conjuringd.reconcile.model import Desired, Observed
from conjuringd.reconcile.plan import pending_switch
from conjuringd.reconcile.switch import RECHECK_SECONDS, SwitchHold

log = structlog.get_logger(__name__)


class SwitchWatch:
    def __init__(self, wake: Callable[[str], None], recheck: float = RECHECK_SECONDS):
        self._wake = wake
        self._recheck = recheck
        self._timer: asyncio.TimerHandle | None = None

    def update(self, desired: Desired | None, observed: Observed) -> SwitchHold | None:
        """What a staged new hub waits for (and a wake-up scheduled to look again), or None."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        hold = pending_switch(desired, observed)
        if hold is not None:
            log.info("switch_waiting", active=hold.active, unknown=hold.unknown, recheck_in=self._recheck)
            self._timer = asyncio.get_running_loop().call_later(self._recheck, self._wake, "switch: recheck")
        return hold
