"""A change that needs a new hub waits for the class (real hub containers, plan() deciding as the reconciler does).

alice holds a variable in a kernel; requirements.txt gains tabulate: the new hub is built and started beside
the serving one on the spare port and waits, and alice's kernel keeps its variable. When the teacher asks
(`conjuringctl switch` records the request the reconciler passes to plan()), the new hub takes over and
tabulate imports. With nobody working, the same change replaces the hub at once, without staging.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from conjuringd.adapters.hub_http import health
from conjuringd.reconcile.model import Observed, ReplaceContainer, StageContainer
from conjuringd.reconcile.plan import pending_switch
from tests.support.docker import DOCKER, require_docker
from tests.support.hubconfig import replace
from tests.support.hubworld import World, container_logs, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-switch", 18975  # the staged hub answers on PORT + 1
NAME_IDLE = "conjuring-switch-idle"


def running(name: str) -> bool:
    done = subprocess.run([DOCKER, "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
    return done.stdout.strip() == "true"


@pytest.fixture
def world(tmp_path):
    require_docker()
    remove_hub_containers(NAME)
    w = World(tmp_path, name=NAME, port=PORT, switch_idle=10)
    try:
        yield w
    finally:
        asyncio.run(w.hub.close())
        remove_hub_containers(NAME)


def test_with_a_student_working_the_new_hub_waits_beside_and_takes_over_when_asked(world):
    asyncio.run(world.converge())
    alice = login("alice", "alice-pw-1", world.base)
    kernel = start_kernel(alice, "alice")
    execute(alice, "alice", kernel, "kept = 6 * 7")

    world.config = replace(world.config, requirements=b"tabulate\n")
    done = asyncio.run(world.converge())
    assert StageContainer in done and ReplaceContainer not in done, done
    assert running(f"{NAME}-next") and health(f"http://127.0.0.1:{PORT + 1}")  # the new hub answers beside
    assert execute(alice, "alice", kernel, "print(kept)").strip() == "42"  # nothing of alice's was touched
    hold = pending_switch(world.desired(), Observed(hub=asyncio.run(world.hub.observe())))
    assert hold is not None and hold.describe() == "new hub ready, waiting for 1 active student"

    world.switch_requested = True
    done = asyncio.run(world.converge())
    assert ReplaceContainer in done, done
    assert not running(f"{NAME}-next")
    alice = login("alice", "alice-pw-1", world.base)
    kernel = start_kernel(alice, "alice")
    assert execute(alice, "alice", kernel, "import tabulate; print(tabulate.__name__)", timeout=120).strip() == "tabulate", \
        container_logs(40, NAME)


def test_with_nobody_working_the_same_change_replaces_the_hub_at_once(tmp_path):
    require_docker()
    remove_hub_containers(NAME_IDLE)
    w = World(tmp_path, name=NAME_IDLE, port=PORT, switch_idle=10)
    try:
        asyncio.run(w.converge())
        w.config = replace(w.config, requirements=b"tabulate\n")
        done = asyncio.run(w.converge())
        assert ReplaceContainer in done and StageContainer not in done, done
        assert not running(f"{NAME_IDLE}-next")
        assert login("alice", "alice-pw-1", w.base).wait_lab("alice", 240) == 200
    finally:
        asyncio.run(w.hub.close())
        remove_hub_containers(NAME_IDLE)
