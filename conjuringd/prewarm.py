"""Prewarm: start every student's server before class, through the hub's REST API.

After the hub serves (`[hub] prewarm = true`), conjuringd starts the servers with
bounded concurrency (a spawn is CPU-bound: about one per core at a time) and
keeps each one from being culled as idle until its student first uses it or
until `hold_until`: the idle culler looks at the *server's* last activity, so
the daemon refreshes that with `POST /users/<name>/activity` while the student
has not come yet. A student counts as having come once the hub records activity
for the *user* (login, pages, proxy traffic) after the server was ready.

Also `classroom_status()`: how many students are active and the memory headroom,
a pure function for `conjuringctl status`.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import structlog

from conjuringd.adapters import hub_http

log = structlog.get_logger(__name__)

# (method, path under /hub/api, JSON body or None) -> (HTTP status, decoded JSON or None); blocking
ApiCall = Callable[[str, str, "dict | None"], "tuple[int, object]"]

DEFAULT_HOLD = timedelta(hours=3)
# tests/bench/classroom.py: what the container's memory grows by per student with a server and a kernel
# with numpy, forked from the fork server (anon 62-69 MB, PSS 65-77 MB), rounded up
PER_STUDENT_MB = 80
RECENT = timedelta(minutes=10)  # "active" in conjuringctl status and the report


@dataclass
class PrewarmReport:
    ready: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason
    used: list[str] = field(default_factory=list)  # students who came while held
    seconds: float = 0.0


def hub_api(base_url: str, token: str, timeout: float = 60) -> ApiCall:
    return lambda method, path, body=None: hub_http.api(base_url, token, method, path, body, timeout)


def _utc(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def server_state(model: object) -> str:
    """'ready', 'pending' or 'stopped' from a JupyterHub user model."""
    if not isinstance(model, dict):
        return "stopped"
    server = (model.get("servers") or {}).get("")
    if server and server.get("ready"):
        return "ready"
    if (server and server.get("pending")) or model.get("pending"):
        return "pending"
    return "stopped"


class _Prewarmer:
    def __init__(self, call: ApiCall, poll: float, start_timeout: float):
        self.call, self.poll, self.start_timeout = call, poll, start_timeout

    async def api(self, method: str, path: str, body: dict | None = None):
        """(status, model); status 0 when the hub did not answer (busy or restarting): callers retry."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self.call, method, path, body)
        except OSError as exc:  # timeouts and refused connections
            log.info("prewarm_hub_unanswered", method=method, path=path, error=str(exc)[:100])
            return 0, None

    async def start_one(self, name: str, slots: asyncio.Semaphore) -> tuple[str, str]:
        """(name, "") when the server is ready, else (name, reason)."""
        async with slots:
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                status, _ = await self.api("POST", f"/users/{name}/server")
                if status in (201, 202, 400):  # started, pending, already running
                    break
                if status not in (0, 429):  # 429: the hub's own spawn limit; 0: no answer; both: try again
                    return name, f"start refused: HTTP {status}"
                await asyncio.sleep(self.poll)
            return name, await self.wait_ready(name, deadline)

    async def wait_ready(self, name: str, deadline: float) -> str:
        seen_pending = False
        while time.monotonic() < deadline:
            status, model = await self.api("GET", f"/users/{name}")
            if status == 0:
                await asyncio.sleep(self.poll)
                continue
            if status != 200:
                return f"user lookup: HTTP {status}"
            state = server_state(model)
            if state == "ready":
                return ""
            if state == "stopped" and seen_pending:
                return "spawn failed"
            seen_pending = seen_pending or state == "pending"
            await asyncio.sleep(self.poll)
        return "timeout"

    async def last_activity(self, name: str) -> tuple[str, datetime | None]:
        status, model = await self.api("GET", f"/users/{name}")
        if status == 0:
            return "unknown", None
        if status != 200 or not isinstance(model, dict):
            return "gone", None
        return server_state(model), _utc(model.get("last_activity"))

    async def hold(self, names: list[str], until: datetime, refresh_every: float, report: PrewarmReport) -> None:
        """Refresh the servers' activity until each student came or `until` passed."""
        marks = {}
        for name in names:
            marks[name] = (await self.last_activity(name))[1]
        waiting = set(names)
        while waiting and datetime.now(timezone.utc) < until:
            for name in sorted(waiting):
                state, seen = await self.last_activity(name)
                if state == "unknown":
                    continue  # the hub did not answer: ask again next round
                mark = marks[name]
                if state != "ready" or (seen is not None and (mark is None or seen > mark)):
                    waiting.discard(name)
                    if state == "ready":
                        report.used.append(name)
                    continue
                now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
                await self.api("POST", f"/users/{name}/activity", {"servers": {"": {"last_activity": now}}})
            await asyncio.sleep(refresh_every)
        log.info("prewarm_hold_done", used=len(report.used), unused=len(waiting))


async def prewarm(base_url: str, token: str, users: Iterable[str], *, concurrency: int = 0,
                  hold_until: datetime | None = None, hold: bool = False, start_timeout: float = 900,
                  refresh_every: float = 60, poll: float = 1.0, call: ApiCall | None = None) -> PrewarmReport:
    """Start the servers of `users` (at most `concurrency` at a time, default one per CPU); return when all are
    ready or failed. With `hold` (or a `hold_until`), go on keeping unused servers from being culled until each
    student came or `hold_until` (default three hours from now) passed, then return."""
    names = list(dict.fromkeys(users))
    worker = _Prewarmer(call or hub_api(base_url, token), poll, start_timeout)
    limit = concurrency or os.cpu_count() or 1
    slots = asyncio.Semaphore(limit)
    started, report = time.monotonic(), PrewarmReport()
    log.info("prewarm_start", users=len(names), concurrency=limit)
    for name, error in await asyncio.gather(*(worker.start_one(n, slots) for n in names)):
        if error:
            report.failed[name] = error
        else:
            report.ready.append(name)
    report.seconds = time.monotonic() - started
    log.info("prewarm_ready", ready=len(report.ready), failed=len(report.failed), seconds=round(report.seconds, 1))
    for name, reason in sorted(report.failed.items()):
        log.warning("prewarm_failed", user=name, reason=reason)
    if hold or hold_until is not None:
        until = hold_until or datetime.now(timezone.utc) + DEFAULT_HOLD
        await worker.hold(report.ready, until, refresh_every, report)
    return report


async def service_token(hub) -> str:
    """The hub REST API token conjuringd owns (kept root-only by the docker adapter)."""
    token_file = hub.secrets_dir / "service-token"
    return (await asyncio.get_running_loop().run_in_executor(None, token_file.read_text)).strip()


def hold_deadline(clock: str, now: datetime) -> datetime | None:
    """The next moment after `now` (an aware local datetime) when the clock shows `clock` ("HH:MM"), in UTC;
    None for "" (the default hold)."""
    if not clock:
        return None
    hour, minute = (int(part) for part in clock.split(":"))
    moment = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if moment <= now:
        moment += timedelta(days=1)
    return moment.astimezone(timezone.utc)


async def prewarm_hub(hub, desired, **kwargs) -> PrewarmReport:
    """prewarm() for the students (non-admins) of `desired`, with the service token the docker adapter keeps,
    holding their servers until they come or [hub] prewarm_until; run it as a background task after convergence."""
    token = await service_token(hub)
    names = [u.name for u in desired.config.users if not u.admin]
    kwargs.setdefault("hold", True)
    kwargs.setdefault("hold_until", hold_deadline(desired.settings.hub.prewarm_until, datetime.now().astimezone()))
    return await prewarm(hub.url(desired), token, names, **kwargs)


def recently_active(model: dict, now: datetime, window: timedelta = RECENT) -> bool:
    """The user did something in the hub within `window` before `now` (its model's last_activity)."""
    stamp = model.get("last_activity")
    if not isinstance(stamp, str) or not stamp:
        return False
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return False
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return now - when <= window


def classroom_status(users: list[dict], mem_used: int, mem_total: int, *, per_student: int = PER_STUDENT_MB * 2**20,
                     admins: Iterable[str] = (), now: datetime | None = None) -> dict:
    """How many students are active and how many more fit in memory.

    users: the hub's user models (GET /hub/api/users with the service token);
    mem_used: bytes the hub container uses now (its cgroup: memory.usage_in_bytes or memory.current);
    mem_total: bytes it may use: the container's memory limit, else the host's MemTotal;
    per_student: bytes one more active student costs (server + kernel).
    """
    admin_names = set(admins)
    states = [(u.get("name", ""), server_state(u)) for u in users if isinstance(u, dict)]
    students = [(n, s) for n, s in states if n not in admin_names and not n.startswith("conjuring-")]
    now = now or datetime.now(timezone.utc)
    recent = sum(1 for u in users if isinstance(u, dict) and u.get("name", "") not in admin_names
                 and not str(u.get("name", "")).startswith("conjuring-") and recently_active(u, now))
    headroom = max(0, mem_total - mem_used)
    return {
        "students": len(students),
        "students_active": sum(1 for _, s in students if s == "ready"),
        "students_starting": sum(1 for _, s in students if s == "pending"),
        "students_recent": recent,  # did something in the last 10 minutes
        "servers_active": sum(1 for _, s in states if s == "ready"),
        "memory_used_mb": round(mem_used / 2**20),
        "memory_total_mb": round(mem_total / 2**20),
        "memory_headroom_mb": round(headroom / 2**20),
        "more_students_fit": headroom // per_student if per_student > 0 else None,
    }
