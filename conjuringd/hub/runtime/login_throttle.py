"""When a login attempt may be checked: a back-off per name and one for the whole hub (pure, clock given).

Used by the authenticator in jupyterhub_config.py (beside this file in the image).
Every attempt waits for its turn *before* its password is compared, so an
attacker who opens many connections at once gains nothing: they wait in line.

- Per name: after `f` wrong passwords in a row for a name, its next attempt is
  checked no sooner than `name_delay(f)` after the previous one (0.5 s, 1 s,
  2 s, ... up to `name_cap`). Attempts for one name that arrive together are
  given successive turns, each as if those before it failed. A name's count is
  forgotten `forget_after` seconds after its last failure.
- Whole hub: attempts are checked at most `rate` per second once a burst of
  `burst` is used up (a whole class logging in at once fits in the burst); a
  successful login gives its turn back, so students' own logins never use up
  the budget. A generic cell rate: `tat` is when the budget is full again.
- Unknown names are counted exactly like existing ones (the table is bounded,
  oldest first out), so how long a failed login takes tells nothing about
  whether the name exists.
- An attempt whose turn would be more than `max_wait` away is refused without
  being checked (`Busy`): the line cannot grow without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


class Busy(Exception):
    """Too many attempts are waiting: this one is refused unchecked."""

    def __init__(self, wait: float):
        self.wait = wait
        super().__init__(f"too many login attempts: try again in {wait:.0f} s")


@dataclass
class _Name:
    failures: int = 0  # wrong passwords in a row
    waiting: int = 0  # attempts given a turn and not yet decided
    next_at: float = 0.0  # the earliest time the next attempt may be checked
    last: float = 0.0  # time of the last failure


@dataclass(frozen=True)
class Limits:
    name_base: float = 0.5
    name_cap: float = 30.0
    rate: float = 2.0  # attempts per second for the whole hub, after the burst
    burst: int = 40
    max_wait: float = 60.0
    forget_after: float = 900.0
    max_names: int = 4096


def name_delay(failures: int, limits: Limits) -> float:
    """How long after a failed attempt the next one for that name waits, with `failures` failures in a row."""
    if failures <= 0:
        return 0.0
    return min(limits.name_cap, limits.name_base * 2 ** (failures - 1))


class LoginThrottle:
    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self._names: OrderedDict[str, _Name] = OrderedDict()
        self._tat = 0.0  # generic cell rate algorithm: theoretical arrival time of the next attempt

    def turn(self, name: str, now: float) -> float:
        """Reserve this attempt's turn; return the time at which it may be checked. Raises Busy."""
        entry = self._entry(name, now)
        name_at = max(now, entry.next_at)
        interval = 1.0 / self.limits.rate
        tat = max(self._tat, now)  # the hub's budget is taken on arrival, whatever the name waits for
        at = max(name_at, tat - (self.limits.burst - 1) * interval)
        if at - now > self.limits.max_wait:
            raise Busy(at - now)
        self._tat = tat + interval
        entry.waiting += 1
        entry.next_at = at + name_delay(entry.failures + entry.waiting, self.limits)
        return at

    def failed(self, name: str, now: float) -> None:
        entry = self._entry(name, now)
        entry.waiting = max(0, entry.waiting - 1)
        entry.failures += 1
        entry.last = now

    def succeeded(self, name: str, now: float) -> None:
        entry = self._entry(name, now)
        entry.waiting = max(0, entry.waiting - 1)
        entry.failures = 0
        if entry.waiting == 0:
            entry.next_at = now
        self._tat = max(now, self._tat - 1.0 / self.limits.rate)  # a student's own login costs no budget

    def _entry(self, name: str, now: float) -> _Name:
        entry = self._names.get(name)
        if entry is not None and not entry.waiting and now - max(entry.last, entry.next_at) > self.limits.forget_after:
            entry = None
        if entry is None:
            entry = self._names[name] = _Name(next_at=now)
        self._names.move_to_end(name)
        while len(self._names) > self.limits.max_names:
            oldest = next(iter(self._names))
            if self._names[oldest].waiting:
                break  # still in line: kept until decided
            del self._names[oldest]
        return entry
