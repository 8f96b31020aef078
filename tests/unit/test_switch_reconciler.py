"""The reconciler with a switch that waits for the class, against an in-memory hub (loop wiring only)."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta

import pytest

from conjuringd.paths import Paths
from conjuringd.reconcile.execute import Adapters
from conjuringd.reconcile.loop import Reconciler
from conjuringd.reconcile.model import ContainerState, HubObserved
from conjuringd.reconcile.switch import Activity, StudentActivity
from conjuringd.reconcile.triggers import Heartbeat, Triggers
from conjuringd.status import StatusBoard
from conjuringd.store import SnapshotStore
from tests.unit.test_reconciler import REPO, FakeHub, Silent


class StagingHub(FakeHub):
    def __init__(self):
        super().__init__()
        self.staged: ContainerState | None = None
        self.working: tuple[str, ...] = ()

    async def observe(self):
        now = datetime.now().astimezone()
        students = tuple(StudentActivity(name, now - timedelta(minutes=1)) for name in self.working)
        activity = Activity(now, students) if self.container else None
        return HubObserved(frozenset(self.images), self.container, self.staged, now, activity)

    async def stage_container(self, desired, progress):
        self.calls.append("stage")
        self.staged = ContainerState("next", desired.hashes.image, desired.hashes.restart, True)

    async def drop_staged(self, container_id=""):
        self.calls.append("drop_staged")
        self.staged = None

    async def replace_container(self, desired, progress):
        self.staged = None
        await super().replace_container(desired, progress)


@pytest.fixture
def setup(tmp_path):
    paths = Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")
    shutil.copytree(REPO / "custom", paths.local_custom)
    hub = StagingHub()
    status = StatusBoard(paths.status_file, Silent())
    reconciler = Reconciler(SnapshotStore(paths), Adapters(hub=hub), status, Triggers(quiet=0.01), Heartbeat(),
                            hub_enabled=True)
    return paths, hub, reconciler


async def test_a_requirement_added_during_class_waits_then_the_teacher_switches(setup):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    serving = hub.container
    hub.working = ("alice", "bob")
    (paths.local_custom / "requirements.txt").write_text("tabulate\n")
    await reconciler.run_pass(("local: edit",))
    assert hub.calls == ["build", "replace", "build", "stage"] and hub.container == serving
    assert reconciler.status.get("phase") == "new hub ready, waiting for 2 active students"
    assert reconciler.status.get("switch_waiting") == "new hub ready, waiting for 2 active students"
    assert reconciler.switch_watch._timer is not None  # it looks again without anyone waking it

    users = paths.local_custom / "users.csv"
    users.write_text(users.read_text() + "zoe,longpassword,\n")
    await reconciler.run_pass(("local: edit",))
    assert hub.calls[-1] == "sync_users" and hub.container.id == serving.id  # live changes never wait

    reconciler.store.state.update(switch_requested=True)  # what `conjuringctl switch` records
    await reconciler.run_pass(("ctl: switch",))
    assert hub.calls[-1] == "replace" and hub.staged is None
    assert reconciler.status.get("phase").startswith("serving") and not reconciler.status.get("switch_waiting")
    assert reconciler.store.state.read().switch_requested is False  # the next change waits for the class again


async def test_the_class_going_idle_lets_the_waiting_hub_take_over(setup):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    hub.working = ("alice",)
    (paths.local_custom / "requirements.txt").write_text("tabulate\n")
    await reconciler.run_pass(("local: edit",))
    assert hub.calls[-1] == "stage"
    hub.working = ()
    await reconciler.run_pass(("switch: recheck",))
    assert hub.calls[-1] == "replace" and reconciler.switch_watch._timer is None


async def test_a_stick_carrying_switch_now_asks_for_the_switch(setup, tmp_path):
    paths, hub, reconciler = setup
    await reconciler.run_pass(("startup",))
    hub.working = ("alice",)
    folder = tmp_path / "stick"
    (folder).mkdir()
    (folder / "requirements.txt").write_text("tabulate\n")
    outcome = await reconciler.import_folder(folder, {"kind": "stick", "device": "/dev/sdz1", "switch_now": True})
    assert outcome.result == "applied"
    assert "switch_now" not in reconciler.store.state.read().active_source
    await reconciler.run_pass(("stick",))
    assert hub.calls[-2:] == ["build", "replace"]  # never staged: the teacher asked


def test_the_stick_layout_finds_switch_now_in_any_case(tmp_path):
    from conjuringd.sticks.layout import find_layout

    (tmp_path / "conjuring" / "custom").mkdir(parents=True)
    assert find_layout(tmp_path).switch_now is False
    (tmp_path / "conjuring" / "switch-now").write_text("")  # a FAT driver may show it lower-cased
    assert find_layout(tmp_path).switch_now is True
