"""When a ready new hub may replace the serving one: pure, no I/O.

A change that needs a new hub while students are working does not kill their
servers: the new hub is started beside the serving one (staged) and waits until
nobody has been active for `[hub] switch_idle` minutes, until `[hub] switch_at`,
or until the teacher asks (`conjuringctl switch`, a stick carrying SWITCH-NOW).
A student is active with a kernel a browser is connected to or that is busy, or
with any activity in the last switch_idle minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from conjuringd.config.model import HubSettings

RECHECK_SECONDS = 30.0  # how often a waiting switch looks at the class again (idle, switch_at)


@dataclass(frozen=True)
class StudentActivity:
    name: str
    last_activity: datetime | None = None  # aware; the latest of the user's and the server's
    kernels_in_use: int = 0  # kernels with a connected browser or executing


@dataclass(frozen=True)
class Activity:
    """Who is working on the serving hub, as its REST API said at `now` (an aware local datetime)."""

    now: datetime
    students: tuple[StudentActivity, ...] | None = None  # None: the hub could not be asked
    error: str = ""


@dataclass(frozen=True)
class SwitchHold:
    """Why a ready new hub waits; `active` students keep it waiting."""

    active: int
    unknown: bool = False  # the serving hub did not say who is active

    def describe(self) -> str:
        if self.unknown:
            return "new hub ready, waiting: the serving hub did not say who is active"
        students = "student" if self.active == 1 else "students"
        return f"new hub ready, waiting for {self.active} active {students}"


def active_students(activity: Activity, idle_minutes: int) -> tuple[str, ...]:
    window = timedelta(minutes=idle_minutes)
    return tuple(
        s.name for s in activity.students or ()
        if s.kernels_in_use > 0 or (s.last_activity is not None and activity.now - s.last_activity < window)
    )


def switch_due(clock: str, staged_at: datetime | None, now: datetime) -> bool:
    """True once the clock has shown `clock` ("HH:MM") since the new hub was staged (local time)."""
    if not clock or staged_at is None:
        return False
    hour, minute = (int(part) for part in clock.split(":"))
    local = staged_at.astimezone(now.tzinfo or timezone.utc)
    moment = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if moment <= local:
        moment += timedelta(days=1)
    return now >= moment


def hold(settings: HubSettings, activity: Activity | None, requested: bool,
         staged_at: datetime | None = None) -> SwitchHold | None:
    """None: switch now. Otherwise what keeps the new hub waiting."""
    if requested or settings.switch_idle == 0 or activity is None:
        return None
    if switch_due(settings.switch_at, staged_at, activity.now):
        return None
    if activity.students is None:
        return SwitchHold(0, unknown=True)
    active = active_students(activity, settings.switch_idle)
    return SwitchHold(len(active)) if active else None
