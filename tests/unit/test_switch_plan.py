"""A new hub that waits for the class: the pure decisions (plan, switch.hold, the activity read from the hub)."""

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from conjuringd.adapters.docker_switch import staged_port, student_activity
from conjuringd.config.model import HubSettings
from conjuringd.reconcile.model import (
    ContainerState, DropStaged, HubObserved, Observed, ReplaceContainer, StageContainer, SyncFiles, SyncUsers,
)
from conjuringd.reconcile.plan import pending_switch, plan, replace_key
from conjuringd.reconcile.switch import Activity, StudentActivity, hold, switch_due
from tests.unit.test_plan import ACTIVE_NET, DESIRED

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=timezone(timedelta(hours=1)))
OLD = ContainerState("c1", "old-img", "rst", True, "usr", "fil")  # serving the previous image
STAGED = ContainerState("n1", "img", "rst", True)
WORKING = Activity(NOW, (StudentActivity("ana", NOW - timedelta(minutes=2)), StudentActivity("bo", None)))
IDLE = Activity(NOW, (StudentActivity("ana", NOW - timedelta(minutes=30)), StudentActivity("bo", None)))


def world(activity=WORKING, staged=None, container=OLD, requested=False, failed=frozenset(), staged_at=None):
    hub = HubObserved(frozenset({"img", "old-img"}), container, staged, staged_at, activity)
    return Observed(hub, ACTIVE_NET, failed, switch_requested=requested)


def with_hub(**changes):
    settings = replace(DESIRED.config.settings, hub=replace(HubSettings(), **changes))
    return replace(DESIRED, config=replace(DESIRED.config, settings=settings))


def test_with_a_student_working_the_new_hub_is_staged_not_swapped_in():
    assert plan(DESIRED, world()) == [StageContainer("img", "rst")]


def test_a_staged_ready_hub_waits_and_says_for_how_many():
    assert plan(DESIRED, world(staged=STAGED)) == []
    assert pending_switch(DESIRED, world(staged=STAGED)).describe() == "new hub ready, waiting for 1 active student"


def test_nobody_active_switches_at_once_as_before():
    assert plan(DESIRED, world(activity=IDLE)) == [ReplaceContainer("img", "rst")]
    assert plan(DESIRED, world(activity=IDLE, staged=STAGED)) == [ReplaceContainer("img", "rst")]
    assert pending_switch(DESIRED, world(activity=IDLE, staged=STAGED)) is None


def test_the_teacher_asking_switches_even_with_students_working():
    assert plan(DESIRED, world(staged=STAGED, requested=True)) == [ReplaceContainer("img", "rst")]


def test_a_kernel_in_use_counts_as_active_however_old_the_last_activity():
    busy = Activity(NOW, (StudentActivity("ana", NOW - timedelta(hours=3), kernels_in_use=1),))
    assert plan(DESIRED, world(activity=busy)) == [StageContainer("img", "rst")]


def test_switch_idle_is_the_window_and_zero_never_waits():
    assert plan(with_hub(switch_idle=1), world()) == [ReplaceContainer("img", "rst")]  # 2 minutes ago: idle for 1
    assert plan(with_hub(switch_idle=0), world()) == [ReplaceContainer("img", "rst")]


def test_switch_at_takes_over_once_the_clock_has_shown_it_since_staging():
    at = with_hub(switch_at="09:59")
    staged_at = NOW - timedelta(minutes=5)  # 09:55 local
    assert plan(at, world(staged=STAGED, staged_at=staged_at)) == [ReplaceContainer("img", "rst")]
    later = with_hub(switch_at="10:30")
    assert plan(later, world(staged=STAGED, staged_at=staged_at)) == []
    assert not switch_due("09:50", staged_at, NOW)  # 09:50 is tomorrow's, seen from 09:55


def test_a_hub_that_cannot_say_who_is_active_keeps_the_new_one_waiting():
    unknown = Activity(NOW, None, "timed out")
    assert plan(DESIRED, world(activity=unknown, staged=STAGED)) == []
    assert "did not say who is active" in pending_switch(DESIRED, world(activity=unknown, staged=STAGED)).describe()


def test_live_changes_reach_the_serving_hub_while_the_switch_waits():
    stale = replace(OLD, users_hash="old-users", files_hash="old-files")
    assert plan(DESIRED, world(container=stale, staged=STAGED)) == [SyncUsers("usr"), SyncFiles("fil")]


def test_a_staged_hub_for_another_configuration_is_staged_again():
    other = replace(STAGED, image_hash="older")
    assert plan(DESIRED, world(staged=other)) == [StageContainer("img", "rst")]
    unchecked = replace(STAGED, checked=False)  # the daemon stopped while staging it
    assert plan(DESIRED, world(staged=unchecked)) == [StageContainer("img", "rst")]


def test_a_staged_hub_no_longer_wanted_is_removed():
    serving_wanted = ContainerState("c1", "img", "rst", True, "usr", "fil")
    assert plan(DESIRED, world(container=serving_wanted, staged=replace(STAGED, image_hash="x"))) == [DropStaged("n1")]
    failed = frozenset({replace_key("img", "rst")})
    assert plan(DESIRED, world(staged=STAGED, failed=failed)) == [DropStaged("n1")]


def test_no_serving_hub_or_a_stopped_one_is_replaced_without_waiting():
    assert plan(DESIRED, world(container=None)) == [ReplaceContainer("img", "rst")]
    assert plan(DESIRED, world(container=replace(OLD, running=False))) == [ReplaceContainer("img", "rst")]


def test_without_activity_observed_nothing_waits():
    assert hold(HubSettings(), None, False) is None


def test_activity_from_the_hub_rest_api():
    user = {"name": "ana", "last_activity": "2026-12-02T08:00:00Z",
            "servers": {"": {"ready": True, "last_activity": "2026-12-02T08:55:00.123Z"}}}
    kernels = [{"connections": 0, "execution_state": "idle", "last_activity": "2026-12-02T08:59:00.000000Z"}, {"connections": 1, "execution_state": "idle"},
               {"connections": 0, "execution_state": "busy"}]
    seen = student_activity(user, kernels)
    assert seen.last_activity == datetime(2026, 12, 2, 8, 59, tzinfo=timezone.utc)  # the kernel's, the latest
    assert seen.kernels_in_use == 2  # a prewarmed kernel nobody opened is not in use
    assert student_activity({"name": "bo", "last_activity": None, "servers": {}}, []) == StudentActivity("bo")


def test_the_staged_hub_uses_the_next_port():
    assert staged_port(18975) == 18976 and staged_port(65535) == 65534


def test_while_a_switch_waits_the_reconciler_is_woken_to_look_again_and_not_after():
    from conjuringd.reconcile.waiting import SwitchWatch

    async def run():
        woken = []
        watch = SwitchWatch(woken.append, recheck=0.05)
        assert watch.update(DESIRED, world(staged=STAGED)).active == 1
        await asyncio.sleep(0.2)
        assert woken == ["switch: recheck"]
        assert watch.update(DESIRED, world(staged=STAGED, requested=True)) is None
        await asyncio.sleep(0.2)
        return woken

    assert asyncio.run(run()) == ["switch: recheck"]  # no timer once nothing waits
