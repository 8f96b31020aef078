import asyncio
import threading
import time

import pytest

from conjuringd.sticks.worker import StickStuck, StickWorker


async def test_result_and_exception_come_back():
    worker = StickWorker(lambda: None)
    assert await worker.run(5, lambda a, b: a + b, 2, 3) == 5

    def boom():
        raise RecursionError("deep")

    with pytest.raises(RecursionError, match="deep"):
        await worker.run(5, boom)
    assert worker.running == ""


async def test_a_stuck_step_is_abandoned_at_the_deadline_and_the_worker_is_free_again():
    release = threading.Event()
    abandoned = []

    def abandon():
        abandoned.append(time.monotonic())
        release.set()  # as a lazy unmount + killed FUSE helper wakes a blocked read

    worker = StickWorker(abandon)
    started = time.monotonic()
    with pytest.raises(StickStuck, match="the stick stopped answering: copying did not finish within 0 s"):
        await worker.run(0.3, release.wait, name="copying")
    assert 0.3 <= abandoned[0] - started < 2
    assert await worker.run(5, lambda: "next stick") == "next stick"


async def test_a_thread_that_stays_stuck_never_holds_up_anyone():
    forever = threading.Event()
    worker = StickWorker(lambda: None)
    with pytest.raises(StickStuck):
        await worker.run(0.1, forever.wait)
    assert await worker.run(5, lambda: 1) == 1
    stuck = [t for t in threading.enumerate() if t.name == "stick-worker"]
    assert stuck and all(t.daemon for t in stuck)  # the interpreter exits without joining it
    forever.set()


async def test_close_abandons_what_is_running_without_waiting():
    release = threading.Event()
    worker = StickWorker(release.set)
    task = asyncio.ensure_future(worker.run(60, release.wait))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    worker.close()
    assert time.monotonic() - started < 0.1 and release.is_set()
    assert await asyncio.wait_for(task, 5) is True
