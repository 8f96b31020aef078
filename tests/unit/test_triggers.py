"""Wake-ups, debouncing, back-off and the heartbeat behind the systemd watchdog."""

import asyncio
import time

from conjuringd.reconcile.triggers import Backoff, Heartbeat, Triggers


async def test_a_burst_of_wakeups_settles_into_one_drain():
    triggers = Triggers(quiet=0.05, max_delay=1.0)

    async def burst():
        for i in range(5):
            triggers.wake(f"edit {i}")
            await asyncio.sleep(0.01)

    task = asyncio.create_task(burst())
    assert await triggers.wait(timeout=1)
    await triggers.settle()
    await task
    assert triggers.drain() == tuple(f"edit {i}" for i in range(5))
    assert not triggers.pending


async def test_settle_gives_up_waiting_for_quiet_after_max_delay():
    triggers = Triggers(quiet=0.2, max_delay=0.1)
    triggers.wake("a")
    started = time.monotonic()
    await triggers.settle()
    assert time.monotonic() - started < 0.19


async def test_wait_times_out_without_wakeups_and_returns_early_with_one():
    triggers = Triggers()
    assert not await triggers.wait(timeout=0.01)
    asyncio.get_running_loop().call_later(0.01, triggers.wake, "x")
    started = time.monotonic()
    assert await triggers.wait(timeout=5)
    assert time.monotonic() - started < 1


def test_backoff_doubles_up_to_the_maximum_and_resets():
    backoff = Backoff(initial=1, maximum=5)
    assert [backoff.next_delay() for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_heartbeat_is_fresh_when_idle_or_within_the_step_deadline():
    now = [100.0]
    heartbeat = Heartbeat(_clock=lambda: now[0])
    assert heartbeat.fresh()
    heartbeat.busy(10)
    now[0] = 109.0
    assert heartbeat.fresh()
    now[0] = 110.5
    assert not heartbeat.fresh()
    heartbeat.idle()
    assert heartbeat.fresh()
