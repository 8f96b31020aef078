"""conjuringd.prewarm against an in-memory hub REST API (the logic only; the real hub is in tests/bench/classroom.py
and tests/integration/test_classroom.py)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from conjuringd.prewarm import classroom_status, hold_deadline, prewarm, prewarm_hub, server_state


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


class FakeHub:
    """Servers take `boot_polls` GETs to become ready; at most `hub_limit` may be pending (else 429)."""

    def __init__(self, names, boot_polls=2, hub_limit=0, failing=(), refuse=()):
        self.lock = threading.Lock()
        self.users = {n: {"name": n, "servers": {}, "pending": None, "last_activity": None} for n in names}
        self.polls, self.boot_polls, self.hub_limit = {}, boot_polls, hub_limit
        self.failing, self.refuse = set(failing), set(refuse)
        self.max_pending, self.activity, self.calls = 0, [], []

    def pending(self):
        return sum(1 for u in self.users.values() if u["pending"])

    def __call__(self, method, path, body=None):
        with self.lock:
            self.calls.append((method, path))
            parts = path.strip("/").split("/")
            name = parts[1]
            user = self.users.get(name)
            if user is None:
                return 404, None
            if method == "POST" and parts[2:] == ["server"]:
                return self._start(name, user)
            if method == "GET" and len(parts) == 2:
                return 200, self._poll(name, user)
            if method == "POST" and parts[2:] == ["activity"]:
                self.activity.append((name, body))
                return 200, None
            return 400, None

    def _start(self, name, user):
        if name in self.refuse:
            return 403, None
        if user["servers"]:
            return 400, None
        if self.hub_limit and self.pending() >= self.hub_limit:
            return 429, None
        user["pending"] = "spawn"
        user["servers"] = {"": {"ready": False, "pending": "spawn"}}
        self.polls[name] = 0
        self.max_pending = max(self.max_pending, self.pending())
        return 202, None

    def _poll(self, name, user):
        if user["pending"]:
            self.polls[name] += 1
            if self.polls[name] >= self.boot_polls:
                user["pending"] = None
                if name in self.failing:
                    user["servers"] = {}
                else:
                    user["servers"] = {"": {"ready": True, "pending": None}}
                    user["last_activity"] = iso(datetime.now(timezone.utc))
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in user.items()}


NAMES = [f"s{i:02d}" for i in range(12)]


async def test_starts_every_server_with_bounded_concurrency():
    hub = FakeHub(NAMES, boot_polls=3)
    report = await prewarm("http://hub", "t", NAMES, concurrency=3, poll=0.001, call=hub)
    assert sorted(report.ready) == NAMES and not report.failed
    assert hub.max_pending == 3  # never more than 3 spawns in flight, and it used all 3
    assert all(server_state(hub.users[n]) == "ready" for n in NAMES)
    assert not hub.activity  # no hold asked for


async def test_hub_spawn_limit_429_waits_for_a_slot_and_duplicates_start_once():
    hub = FakeHub(NAMES[:6], boot_polls=2, hub_limit=2)
    report = await prewarm("http://hub", "t", NAMES[:6] + ["s00"], concurrency=4, poll=0.001, call=hub)
    assert sorted(report.ready) == NAMES[:6]  # s00 asked twice, started and reported once
    assert hub.max_pending == 2
    assert any(m == "POST" for m, _ in hub.calls) and not report.failed


async def test_failures_are_reported_with_reasons_and_do_not_stop_the_others():
    hub = FakeHub(NAMES[:5], failing={"s01"}, refuse={"s02"})
    report = await prewarm("http://hub", "t", NAMES[:5] + ["nobody"], concurrency=2, poll=0.001, call=hub)
    assert sorted(report.ready) == ["s00", "s03", "s04"]
    assert report.failed == {"s01": "spawn failed", "s02": "start refused: HTTP 403", "nobody": "start refused: HTTP 404"}


async def test_a_server_already_running_counts_as_ready():
    hub = FakeHub(["s00"], boot_polls=1)
    hub.users["s00"]["servers"] = {"": {"ready": True}}
    report = await prewarm("http://hub", "t", ["s00"], poll=0.001, call=hub)
    assert report.ready == ["s00"]


async def test_start_timeout_is_a_failure():
    hub = FakeHub(["s00"], boot_polls=10**9)
    report = await prewarm("http://hub", "t", ["s00"], poll=0.001, start_timeout=0.05, call=hub)
    assert report.failed == {"s00": "timeout"}


async def test_hold_refreshes_unused_servers_until_the_student_comes():
    hub = FakeHub(["s00", "s01"], boot_polls=1)

    def student_logs_in(method, path, body=None):
        result = hub(method, path, body)
        if method == "POST" and path == "/users/s00/activity" and len(hub.activity) >= 3:
            hub.users["s00"]["last_activity"] = iso(datetime.now(timezone.utc) + timedelta(seconds=5))
        return result

    until = datetime.now(timezone.utc) + timedelta(seconds=0.3)
    report = await prewarm("http://hub", "t", ["s00", "s01"], poll=0.001, refresh_every=0.02, hold_until=until,
                           call=student_logs_in)
    assert report.used == ["s00"]
    refreshed = [name for name, _ in hub.activity]
    assert refreshed.count("s01") > refreshed.count("s00") >= 1  # s00 stopped being refreshed once used
    assert all(set(body) == {"servers"} and "last_activity" in body["servers"][""] for _, body in hub.activity)
    assert datetime.now(timezone.utc) >= until  # s01 never came: held until the configured time


async def test_hold_stops_for_a_server_that_was_stopped():
    hub = FakeHub(["s00"], boot_polls=1)

    def culled_by_teacher(method, path, body=None):
        result = hub(method, path, body)
        if method == "POST" and path.endswith("/activity"):
            hub.users["s00"]["servers"] = {}
        return result

    until = datetime.now(timezone.utc) + timedelta(seconds=30)
    report = await prewarm("http://hub", "t", ["s00"], poll=0.001, refresh_every=0.01, hold_until=until,
                           call=culled_by_teacher)
    assert report.used == [] and len(hub.activity) == 1


@pytest.mark.parametrize("model, state", [
    ({"servers": {"": {"ready": True}}}, "ready"),
    ({"servers": {"": {"ready": False, "pending": "spawn"}}}, "pending"),
    ({"servers": {}, "pending": "spawn"}, "pending"),
    ({"servers": {}}, "stopped"),
    ({}, "stopped"),
    (None, "stopped"),
])
def test_server_state(model, state):
    assert server_state(model) == state


def test_classroom_status_counts_students_and_memory_headroom():
    users = [
        {"name": "s01", "servers": {"": {"ready": True}}, "last_activity": "2026-12-02T09:55:00.123Z"},
        {"name": "s02", "servers": {"": {"ready": True}}, "last_activity": "2026-12-02T09:40:00Z"},
        {"name": "s03", "servers": {"": {"pending": "spawn"}}},
        {"name": "s04", "servers": {}},
        {"name": "teacher", "servers": {"": {"ready": True}}, "last_activity": "2026-12-02T09:59:00Z"},
        {"name": "conjuring-probe", "servers": {}, "last_activity": "2026-12-02T09:59:00Z"},
    ]
    now = datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)
    status = classroom_status(users, mem_used=3 * 2**30, mem_total=8 * 2**30, per_student=200 * 2**20,
                              admins=["teacher"], now=now)
    assert status == {  # active in the last 10 minutes: s01 only (not the teacher, not our probe user)
        "students": 4, "students_active": 2, "students_starting": 1, "servers_active": 3, "students_recent": 1,
        "memory_used_mb": 3072, "memory_total_mb": 8192, "memory_headroom_mb": 5120, "more_students_fit": 25,
    }


def test_classroom_status_when_memory_is_full():
    status = classroom_status([], mem_used=9 * 2**30, mem_total=8 * 2**30)
    assert status["memory_headroom_mb"] == 0 and status["more_students_fit"] == 0 and status["students"] == 0


async def test_prewarm_hub_starts_the_students_of_the_configuration_with_the_adapters_token(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "service-token").write_text("tok\n")
    seen = {}
    users = [SimpleNamespace(name="s00", admin=False), SimpleNamespace(name="teacher", admin=True),
             SimpleNamespace(name="s01", admin=False)]
    desired = SimpleNamespace(config=SimpleNamespace(users=users), settings=SimpleNamespace(hub=SimpleNamespace(prewarm_until="")))
    hub = SimpleNamespace(secrets_dir=tmp_path, url=lambda d: seen.setdefault("url", "http://127.0.0.1:8989"))
    fake = FakeHub(["s00", "s01", "teacher"], boot_polls=1)
    report = await prewarm_hub(hub, desired, poll=0.001, hold=False, call=fake)
    assert sorted(report.ready) == ["s00", "s01"]  # the teacher is not prewarmed
    assert server_state(fake.users["teacher"]) == "stopped"


async def test_a_hub_that_does_not_answer_for_a_while_is_asked_again():
    hub = FakeHub(["s00", "s01"], boot_polls=2)
    silences = {"count": 0}

    def busy_hub(method, path, body=None):
        if silences["count"] < 6:  # the first calls time out, as a hub busy starting a class does
            silences["count"] += 1
            raise TimeoutError("timed out")
        return hub(method, path, body)

    report = await prewarm("http://hub", "t", ["s00", "s01"], concurrency=2, poll=0.001, call=busy_hub)
    assert sorted(report.ready) == ["s00", "s01"] and not report.failed
    assert silences["count"] == 6


def test_prewarm_until_is_the_next_time_the_clock_shows_it():
    from datetime import datetime, timedelta, timezone

    now = datetime(2026, 11, 26, 7, 0, tzinfo=timezone(timedelta(hours=1)))  # 07:00 in a UTC+1 classroom
    assert hold_deadline("08:30", now) == datetime(2026, 11, 26, 7, 30, tzinfo=timezone.utc)
    assert hold_deadline("06:00", now) == datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)  # passed today: tomorrow
    assert hold_deadline("07:00", now) == datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
    assert hold_deadline("", now) is None  # the default hold (three hours)
