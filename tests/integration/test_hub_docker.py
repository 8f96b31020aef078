"""The hub against a real dockerd: build, serve, log in, live changes, rebuilds, failures, rollback.

The tests of this module run in order and share one hub: one build on the
bootstrapped base (`local/debian:bookworm`), then small changes on top of it,
as a teacher would make them. Each test drives DockerHub through its Protocol
methods, with `plan()` deciding what is needed, as the reconciler does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import websocket

from conjuringd.adapters.hub_http import HubSession, health
from conjuringd.config.model import Kernel, User
from conjuringd.config.problems import BuildFailed, HubUnhealthy
from conjuringd.hub.dockerfile import render
from conjuringd.reconcile.model import BuildImage, ReplaceContainer, StartContainer, SyncFiles, SyncUsers
from tests.support.docker import DOCKER, require_docker
from tests.support.hubconfig import desired, replace
from tests.support.hubworld import (
    BASE, NAME, USERS, World, container_id, container_logs, login, remove_hub_containers, start_kernel,
)
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RUN = uuid.uuid4().hex  # makes this run's requirement files new to docker's layer cache


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers()
    w = World(tmp_path_factory.mktemp("hub"))
    yield w
    asyncio.run(w.hub.close())
    remove_hub_containers()


async def test_student_logs_in_writes_a_file_and_runs_code_as_themselves(world):
    had_image = world.desired().hashes.image in (await world.hub.observe()).images  # from an earlier run
    done = await world.converge()
    assert done == ([ReplaceContainer] if had_image else [BuildImage, ReplaceContainer])
    observed = await world.hub.observe()
    assert observed.container.running and observed.container.image_hash == world.desired().hashes.image
    assert health(BASE)
    world.alice = alice = login("alice", "alice-pw-1")
    assert alice.wait_lab("alice", 180) == 200
    status, _, _ = alice.request("PUT", "/user/alice/api/contents/hello.txt",
                                 {"type": "file", "format": "text", "content": "my work"})
    assert status == 201
    assert (world.hub.paths.home / "alice" / "hello.txt").read_text() == "my work"
    assert (world.hub.paths.home / "alice" / "README.md").read_text() == "welcome\n"  # from home_default/
    top = subprocess.run([DOCKER, "top", NAME], capture_output=True, text=True).stdout
    assert "jupyterhub_idle_culler --timeout=600" in top and "configurable-http-proxy" in top
    world.kernel = start_kernel(alice, "alice")
    out = execute(alice, "alice", world.kernel, "import os; print(os.getuid(), os.environ['HOME'], open(os.path.expanduser('~/shared/notes.txt')).read())")
    uid, home, notes = out.split(maxsplit=2)
    assert int(uid) == json.loads((world.hub.paths.state_dir / "uids.json").read_text())["users"]["alice"]
    assert int(uid) >= 2000 and home == "/home/alice" and notes.strip() == "week 1"


def in_hub(*command: str, user: str = "root") -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, "exec", "-u", user, NAME, *command], capture_output=True, text=True, timeout=60)


async def test_a_setuid_root_file_in_a_home_does_not_elevate_and_a_device_node_there_opens_nothing(world):
    uid = str(json.loads((world.hub.paths.state_dir / "uids.json").read_text())["users"]["alice"])
    # the attacker: a setuid-root program in a home (a crafted restore or backup could bring one)
    planted = in_hub("sh", "-c", "cp /usr/bin/id /home/alice/rootid && chown root:root /home/alice/rootid"
                     " && chmod 4755 /home/alice/rootid")
    assert planted.returncode == 0, planted.stderr
    control_dir = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own folders are root-only
    control_dir.chmod(0o755)
    host_copy = control_dir / "rootid"
    shutil.copy2(world.hub.paths.home / "alice" / "rootid", host_copy)
    assert host_copy.stat().st_mode & 0o4000 and host_copy.stat().st_uid == 0
    control = subprocess.run([str(host_copy), "-u"], user=65534, capture_output=True, text=True)
    shutil.rmtree(control_dir)
    assert control.stdout.strip() == "0", "control: the same file elevates where exec may gain privileges"
    assert in_hub("/home/alice/rootid", "-u", user=uid).stdout.strip() == uid
    assert in_hub("grep", "NoNewPrivs", "/proc/self/status", user=uid).stdout.split() == ["NoNewPrivs:", "1"]
    hub_pid = in_hub("sh", "-c", "pgrep -o -f jupyterhub").stdout.strip()
    assert in_hub("grep", "NoNewPrivs", f"/proc/{hub_pid}/status").stdout.split() == ["NoNewPrivs:", "1"]
    device = in_hub("sh", "-c", "mknod /home/alice/mem c 1 1 && head -c 1 /home/alice/mem")
    assert device.returncode != 0 and "not permitted" in device.stderr, device
    in_hub("rm", "-f", "/home/alice/rootid", "/home/alice/mem")


async def test_wrong_password_is_refused_and_only_admins_use_the_admin_api(world):
    assert HubSession(BASE, timeout=120).login("alice", "not-her-password") == 403
    assert HubSession(BASE, timeout=120).login("mallory", "alice-pw-1") == 403
    teacher = login("teacher", "teacher-pw-1")
    status, _, body = teacher.request("GET", "/hub/api/users")
    names = {u["name"] for u in json.loads(body)}
    assert status == 200 and {"alice", "teacher"} <= names and "conjuring-probe" not in names
    assert world.alice.request("GET", "/hub/api/users")[0] == 403


async def test_users_and_shared_change_live_without_build_or_restart(world):
    before, builds = container_id(), world.builds
    bob = login("bob", "bob-pw-1")
    assert bob.wait_lab("bob", 180) == 200  # bob is working when he is removed from users.csv
    (world.cfg / "shared" / "notes.txt").write_text("week 2\n")
    (world.cfg / "home_default" / "README.md").write_text("welcome v2\n")
    users = (("alice", "alice-pw-2", False), ("teacher", "teacher-pw-1", True), ("carol", "carol-pw-1", True))
    world.config = replace(world.config, users=tuple(User(n, p, a, i + 2) for i, (n, p, a) in enumerate(users)))
    started = time.monotonic()
    done = await world.converge(allow={SyncUsers, SyncFiles})
    seconds = time.monotonic() - started
    assert sorted(t.__name__ for t in done) == ["SyncFiles", "SyncUsers"]
    assert world.builds == builds and container_id() == before
    print(f"live users+shared sync: {seconds:.2f}s")
    # the first student's session and kernel are still there
    assert world.alice.request("GET", "/user/alice/api/contents/hello.txt")[0] == 200
    out = execute(world.alice, "alice", world.kernel, "print(open('/home/alice/shared/notes.txt').read())")
    assert out.strip() == "week 2"
    assert HubSession(BASE, timeout=120).login("alice", "alice-pw-1") == 403
    login("alice", "alice-pw-2")
    carol = login("carol", "carol-pw-1")
    assert carol.request("GET", "/hub/api/users")[0] == 200  # admin from users.csv, live
    assert HubSession(BASE, timeout=120).login("bob", "bob-pw-1") == 403  # removed: locked, home kept, server stopped
    assert (world.hub.paths.home / "bob").is_dir()
    status, _, body = carol.request("GET", "/hub/api/users/bob")
    assert status == 200 and not json.loads(body)["servers"]
    # home_default/ seeds new homes only
    assert (world.hub.paths.home / "carol" / "README.md").read_text() == "welcome v2\n"
    assert (world.hub.paths.home / "alice" / "README.md").read_text() == "welcome\n"


async def test_admin_flag_changes_live(world):
    before = container_id()
    assert world.alice.request("GET", "/hub/api/users")[0] == 403
    world.config = replace(world.config, users=tuple(
        User(u.name, u.password, True if u.name == "alice" else u.admin, u.line) for u in world.config.users))
    assert await world.converge(allow={SyncUsers}) == [SyncUsers]
    assert container_id() == before
    assert world.alice.request("GET", "/hub/api/users")[0] == 200  # her open session, no new login
    world.config = replace(world.config, users=tuple(
        User(u.name, u.password, False if u.name == "alice" else u.admin, u.line) for u in world.config.users))
    await world.converge(allow={SyncUsers})
    assert world.alice.request("GET", "/hub/api/users")[0] == 403


async def test_requirements_change_rebuilds_only_from_requirements(world):
    before = container_id()
    world.config = replace(world.config, requirements=f"tabulate\n# run {RUN}\n".encode())
    rendered = render(world.config, "x")
    first_requirements_step = dict(rendered.sections)["requirements"]
    done = await world.converge()
    assert done == [BuildImage, ReplaceContainer]
    build = world.hub.last_build
    print(f"requirements rebuild: {build.total} steps, cached {build.cached}, downtime {world.hub.last_downtime:.1f}s")
    assert build.cached == list(range(2, first_requirements_step))  # step 1 is FROM
    assert container_id() != before
    alice = login("alice", "alice-pw-2")
    assert alice.wait_lab("alice") == 200
    status, _, body = alice.request("GET", "/user/alice/api/contents/hello.txt?content=1")
    assert status == 200 and json.loads(body)["content"] == "my work"
    world.alice, world.kernel = alice, start_kernel(alice, "alice")
    assert execute(alice, "alice", world.kernel, "import tabulate; print('ok')").strip() == "ok"


async def test_venv_kernel_from_requirements_file(world):
    world.config = replace(world.config, kernels=(Kernel("stats", "venv", "requirements-stats.txt", f"tabulate\n# run {RUN}\n".encode()),))
    first_kernel_step = dict(render(world.config, "x").sections)["kernel:stats"]
    await world.converge()
    assert world.hub.last_build.cached == list(range(2, first_kernel_step))
    alice = login("alice", "alice-pw-2")
    kernel = start_kernel(alice, "alice", "stats")
    out = execute(alice, "alice", kernel, "import sys, os, tabulate; print(sys.prefix, os.getuid())")
    prefix, uid = out.split()
    assert prefix == "/opt/conjuring/kernels/stats" and int(uid) >= 2000


async def test_memory_and_cpu_limits_hold_a_runaway_kernel_not_the_hub(world):
    limited = dataclasses.replace(world.config.settings.hub, mem_limit="300M", cpu_limit=0.5)
    world.config = replace(world.config, settings=dataclasses.replace(world.config.settings, hub=limited))
    assert await world.converge() == [ReplaceContainer], "a memory limit is a restart, not a rebuild"
    alice = login("alice", "alice-pw-2")
    kernel = start_kernel(alice, "alice")
    assert execute(alice, "alice", kernel, "print('small')").strip() == "small"
    spin = "import time\nt, c = time.time(), time.process_time()\nwhile time.time() - t < 9: pass\nprint(time.process_time() - c)"
    cpu = float(execute(alice, "alice", kernel, spin, timeout=60))
    assert cpu < 7.0, f"a 9 s busy loop at cpu_limit 0.5 used {cpu:.1f} CPU-s"  # unthrottled: ~9
    # the cell finishes, but the kernel now holds 700 MiB: the guard ends it within a few seconds
    assert execute(alice, "alice", kernel, "x = bytearray(700 << 20); print('allocated')").strip() == "allocated"
    deadline, logs = time.monotonic() + 30, ""
    while time.monotonic() < deadline and "ending kernel" not in logs:
        time.sleep(1)
        logs = container_logs()
    assert "memguard: uid" in logs and "ending kernel" in logs, logs[-2000:]
    # the server restarts the kernel: same kernel id, fresh process, the runaway allocation is gone
    deadline, out = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        try:
            out = execute(alice, "alice", kernel, "print('x' in globals())", timeout=10).strip()
            break
        except (websocket.WebSocketException, OSError, RuntimeError, TimeoutError):  # restarting: ask again
            time.sleep(1)
    assert out == "False", out
    assert health(BASE)
    assert alice.request("GET", "/user/alice/api/status")[0] == 200, "the student's server itself stays up"
    world.alice, world.kernel = alice, kernel


async def test_failing_apt_package_keeps_the_old_hub_serving(world):
    before, good = container_id(), world.config
    world.config = replace(good, apt_packages=("conjuring-no-such-package",))  # apt fails on a cache hit too
    with pytest.raises(BuildFailed) as failed:
        await world.converge()
    assert "(apt)" in failed.value.step and "conjuring-no-such-package" in failed.value.step
    assert any("conjuring-no-such-package" in line for line in failed.value.log_tail)
    observed = await world.hub.observe()
    assert observed.container.id == before and observed.container.running
    assert world.desired().hashes.image not in observed.images
    assert health(BASE)
    login("alice", "alice-pw-2")
    world.config = good


async def test_hub_that_cannot_start_rolls_back(world):
    before, good = container_id(), world.config
    world.config = replace(good, hub_config=b"raise SystemExit('broken on purpose')\n")
    with pytest.raises(HubUnhealthy) as failed:
        await world.converge(allow={ReplaceContainer})
    assert failed.value.key == f"{world.desired().hashes.image}:{world.desired().hashes.restart}"
    assert any("broken on purpose" in line for line in failed.value.log_tail)
    observed = await world.hub.observe()
    assert observed.container.id == before and observed.container.running
    assert observed.container.restart_hash == desired(good).hashes.restart
    assert health(BASE)
    login("alice", "alice-pw-2")
    world.config = good


async def test_no_password_in_any_image(world):
    observed = await world.hub.observe()
    passwords = [p.encode() for _, p, _ in USERS] + [b"alice-pw-2", b"carol-pw-1"]
    assert len(observed.images) >= 3
    for image_hash in observed.images:
        tag = f"conjuring/hub:{image_hash}"
        if subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True).returncode:
            continue  # an image of another test run, without our tag
        history = subprocess.run([DOCKER, "history", "--no-trunc", tag], capture_output=True, check=True).stdout
        inspect = subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True, check=True).stdout
        for secret in passwords:
            assert secret not in history and secret not in inspect


async def test_container_removed_by_hand_is_recreated(world):
    subprocess.run([DOCKER, "rm", "-f", NAME], check=True, capture_output=True)
    assert (await world.hub.observe()).container is None
    builds = world.builds
    assert await world.converge() == [ReplaceContainer]
    assert world.builds == builds
    login("alice", "alice-pw-2")
    assert (world.hub.paths.home / "alice" / "hello.txt").read_text() == "my work"


async def test_container_stopped_by_hand_is_started_again(world):
    before = container_id()
    subprocess.run([DOCKER, "stop", "-t", "5", NAME], check=True, capture_output=True)
    assert not (await world.hub.observe()).container.running
    assert await world.converge(allow={StartContainer}) == [StartContainer]
    assert container_id() == before
    deadline = time.monotonic() + 120
    while not health(BASE) and time.monotonic() < deadline:
        time.sleep(0.5)
    login("alice", "alice-pw-2")


async def test_prune_keeps_the_running_and_the_kept_images(world):
    observed = await world.hub.observe()
    running = observed.container.image_hash
    ours = sorted((world.images & observed.images) - {running})  # other runs' images are left alone
    assert ours
    others = observed.images - world.images
    await world.hub.prune_images(frozenset(others | {ours[0]}))
    after = (await world.hub.observe()).images
    assert running in after and ours[0] in after
    assert not (set(ours[1:]) & after)
