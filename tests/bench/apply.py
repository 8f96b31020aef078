"""Seconds from a configuration change to "hub serving the new config", per change class.

Usage (root, real dockerd; starts dockerd and bootstraps the base if needed):
    .venv/bin/python -m tests.bench.apply [--skip-base]
Drives DockerHub through plan() like the reconciler. Prints one row per change
class: users, shared, home_default, requirements, apt, base; with whether the
container was restarted, the build's cached steps and the serving downtime.
The base row is a full rebuild (several minutes); --skip-base leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

from conjuringd.adapters.hub_http import HubSession
from conjuringd.config.model import User
from tests.support.docker import DOCKER, ensure_base_image, ensure_dockerd
from tests.support.hubconfig import replace
from tests.support.hubworld import BASE, NAME, World, container_id, remove_hub_containers


def serving(check, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def can_login(user: str, password: str):
    return lambda: HubSession(BASE, timeout=5).login(user, password) == 302


def file_in_container(path: str, text: str):
    def check() -> bool:
        out = subprocess.run([DOCKER, "exec", NAME, "cat", path], capture_output=True, text=True).stdout
        return out == text
    return check


async def measure(world: World, name: str, change, check) -> dict:
    before, builds = container_id(), world.builds
    change()
    started = time.monotonic()
    world.hub.last_build = None
    await world.converge()
    ok = serving(check)
    seconds = time.monotonic() - started
    build = world.hub.last_build if world.builds > builds else None
    restarted = container_id() != before
    return {
        "change": name,
        "seconds": seconds if ok else float("nan"),
        "restarted": "yes" if restarted else "no",
        "build": f"{len(build.cached)}/{build.total} steps cached" if build else "no build",
        "downtime": f"{world.hub.last_downtime:.1f}s" if restarted else "-",
    }


def changes(world: World, skip_base: bool):
    users = world.config.users + (User("dave", "dave-pw-1", False, 99),)
    yield "users (add one)", lambda: setattr(world, "config", replace(world.config, users=users)), can_login("dave", "dave-pw-1")

    def shared():
        (world.cfg / "shared" / "notes.txt").write_text("week 2\n")
        world.config = replace(world.config)
    yield "shared/ file", shared, file_in_container("/shared/notes.txt", "week 2\n")

    def skel():
        (world.cfg / "home_default" / "README.md").write_text("welcome v2\n")
        world.config = replace(world.config)
    yield "home_default/ file", skel, file_in_container("/srv/conjuring/home_default/README.md", "welcome v2\n")
    yield ("requirements.txt (+tabulate)",
           lambda: setattr(world, "config", replace(world.config, requirements=b"tabulate\n")), can_login("alice", "alice-pw-1"))
    yield ("apt.txt (+tree)",
           lambda: setattr(world, "config", replace(world.config, apt_packages=("tree",))), can_login("alice", "alice-pw-1"))
    if not skip_base:
        dockerfile = b"FROM local/debian:bookworm\nENV COURSE=bench\n"
        yield ("base.Dockerfile",
               lambda: setattr(world, "config", replace(world.config, base_dockerfile=dockerfile, base_image="local/debian:bookworm")),
               can_login("alice", "alice-pw-1"))


async def main(skip_base: bool) -> None:
    ensure_dockerd()
    ensure_base_image()
    remove_hub_containers()
    with tempfile.TemporaryDirectory(prefix="conjuring-bench-") as tmp:
        world = World(Path(tmp))
        started = time.monotonic()
        await world.converge()
        serving(can_login("alice", "alice-pw-1"))
        print(f"initial hub: {time.monotonic() - started:.1f}s (builds: {world.builds})")
        rows = []
        for name, change, check in changes(world, skip_base):
            rows.append(await measure(world, name, change, check))
            print(rows[-1], flush=True)
        await world.hub.close()
        remove_hub_containers()
    print()
    print(f"{'change':<30} {'seconds':>8}  {'restarted':<9}  {'build':<22}  downtime")
    for row in rows:
        print(f"{row['change']:<30} {row['seconds']:8.2f}  {row['restarted']:<9}  {row['build']:<22}  {row['downtime']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-base", action="store_true", help="leave out the full rebuild")
    asyncio.run(main(parser.parse_args().skip_base))
