"""Only our own container is ours, and a long certificate name builds: against the real dockerd.

A second state folder finds the first one's hub running under our name and port
(its mounts, its hub token): it replaces it, never adopts it, and its classroom
status works afterwards. A container started by hand with labels copied from
another state folder's hub is replaced too. The first state folder's student
homes are left as they were.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import subprocess
from pathlib import Path

import docker
import pytest

from conjuringd.adapters.docker_labels import LABEL_OWNER
from conjuringd.classroom import Classroom
from conjuringd.hub.dockerfile import Rendered, render
from conjuringd.reconcile.model import Observed, ReplaceContainer
from conjuringd.reconcile.plan import plan
from tests.support.docker import DOCKER, ensure_base_image, require_docker
from tests.support.hubworld import NAME, PORT, World, container_id, login, remove_hub_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def worlds(tmp_path):
    require_docker()
    remove_hub_containers()
    first, second = World(tmp_path / "box-a"), World(tmp_path / "box-b")
    yield first, second
    for world in (first, second):
        asyncio.run(world.hub.close())
    remove_hub_containers()


def _inspect(name: str) -> dict:
    done = subprocess.run([DOCKER, "inspect", name], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)[0]


def _mount_sources(name: str) -> set[str]:
    return {mount["Source"] for mount in _inspect(name)["Mounts"]}


async def _classroom_status(world: World) -> dict:
    observed = await world.hub.observe()
    return await Classroom(world.hub, status=None).snapshot(world.desired(), observed.container.id)


async def test_a_hub_from_another_state_folder_is_replaced_not_adopted(worlds):
    first, second = worlds
    await first.converge()
    first_id = container_id()
    kept = first.hub.paths.home / "alice" / "essay.txt"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text("my essay\n")
    assert (await first.hub.observe()).container.ours

    # The second box has its own token and folders; the running hub knows neither.
    second.hub._write_users(second.desired())
    with pytest.raises(OSError, match="403"):
        await _classroom_status(second)  # what adopting it gave: "hub API answered 403"
    observed = await second.hub.observe()
    assert observed.container.id == first_id and not observed.container.ours
    actions = plan(second.desired(), Observed(hub=observed))
    assert actions == [ReplaceContainer(second.desired().hashes.image, second.desired().hashes.restart)]
    assert "never adopted" in actions[0].reason

    assert await second.converge() == [ReplaceContainer]
    assert container_id() != first_id
    assert str(second.root) in " ".join(_mount_sources(NAME)) and str(first.root) not in " ".join(_mount_sources(NAME))
    summary = await _classroom_status(second)  # answered: the hub now holds this box's token
    assert summary["students"] >= 2, summary  # alice and bob (the hub lists users it has seen)
    login("bob", "bob-pw-1")
    assert kept.read_text() == "my essay\n", "the other state folder's homes are untouched"
    assert (await first.hub.observe()).container.ours is False, "and the first box now sees it as foreign"


async def test_a_container_started_by_hand_with_copied_labels_is_replaced(worlds):
    first, second = worlds
    await first.converge()
    labels = _inspect(NAME)["Config"]["Labels"]
    remove_hub_containers()
    subprocess.run(
        [DOCKER, "run", "-d", "--name", NAME, "-p", f"{PORT}:8000", "--init",
         *(arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")),
         ensure_base_image(), "sleep", "infinity"],
        check=True, capture_output=True, text=True,
    )
    by_hand = container_id()
    second.hub._write_users(second.desired())
    observed = (await second.hub.observe()).container
    assert observed.id == by_hand and observed.image_hash == second.desired().hashes.image  # labels match...
    assert not observed.ours  # ...but the owner is another state folder's
    assert await second.converge() == [ReplaceContainer]
    assert container_id() != by_hand
    assert _inspect(NAME)["Config"]["Labels"][LABEL_OWNER] != labels[LABEL_OWNER]
    await _classroom_status(second)
    login("alice", "alice-pw-1")


def test_a_certificate_with_a_120_character_name_builds_with_the_real_context(tmp_path):
    """The certs/ part of the real rendered context (pax tar), built by the real dockerd."""
    require_docker()
    long_name = "school-proxy-" + "c" * 103 + ".crt"
    assert len(long_name) == 120
    pem = sorted(Path("/etc/ssl/certs").glob("*.pem"))[0].read_bytes()
    world = World(tmp_path / "box")
    config = dataclasses.replace(world.config, certs=((long_name, pem),))
    certs = tuple(f for f in render(config, "h").files if f[0].startswith("certs/"))
    assert any(path == f"certs/{long_name}" for path, _, _ in certs)
    dockerfile = (f"FROM {ensure_base_image()}\nCOPY certs/ /usr/local/share/ca-certificates/conjuring/\n"
                  f"RUN test -s /usr/local/share/ca-certificates/conjuring/{long_name}\n")
    context = Rendered(dockerfile, certs, (("base", 1),)).context_tar()
    client = docker.from_env(version="auto")
    tag = "conjuring-test/longcert:latest"
    try:
        output = list(client.api.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True,
                                       forcerm=True, pull=False, decode=True))
        errors = [chunk for chunk in output if chunk.get("error")]
        assert not errors, errors
        listing = client.containers.run(tag, ["ls", "/usr/local/share/ca-certificates/conjuring/"], remove=True)
        assert long_name in listing.decode()
    finally:
        subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True)
        client.close()

