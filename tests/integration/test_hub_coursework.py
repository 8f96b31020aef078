"""Coursework with the real hub container and a real stick: students write through the hub, an enrolled
ext4 stick collects their homework and hands out a lesson, a student added afterwards gets the lesson."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json

import pytest

from conjuringd.adapters.mounts import Mounter
from conjuringd.config.model import User
from tests.support.docker import require_docker
from tests.support.hubconfig import replace
from tests.support.hubworld import World, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute
from tests.support.udev import Harness, ext4_read, loops, make_ext4_stick, stick_tree, udevd

pytestmark = [pytest.mark.docker, pytest.mark.udev, pytest.mark.slow]
__all__ = ["loops", "udevd"]

NAME, PORT = "conjuring-collect", 18979
USERS = (("alice", "alice-pw-1", False), ("bob", "bob-pw-1", False), ("dora", "dora-pw-1", False),
         ("teacher", "teacher-pw-1", True))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers(NAME)
    w = World(tmp_path_factory.mktemp("coursework"), name=NAME, port=PORT, users=USERS)
    yield w
    asyncio.run(w.hub.close())
    remove_hub_containers(NAME)


def put(session, user: str, path: str, text: str) -> None:
    status, _, body = session.request("PUT", f"/user/{user}/api/contents/{path}",
                                      {"type": "file", "format": "text", "content": text})
    assert status in (200, 201), body[:300]


def mkdir(session, user: str, path: str) -> None:
    status, _, body = session.request("PUT", f"/user/{user}/api/contents/{path}", {"type": "directory"})
    assert status in (200, 201), body[:300]


async def insert(h: Harness, loops, image) -> str:
    device = loops.attach(image)
    await h.import_and_report(device)
    loops.detach(device)
    return ext4_read(image, "/conjuring/REPORT.txt").decode()


def students_work(world) -> dict:
    """Three students write their homework through the hub; bob also plants links. Their sessions."""
    sessions = {}
    for name, password, _ in USERS[:3]:
        sessions[name] = s = login(name, password, world.base)
        assert s.wait_lab(name, 180) == 200
        mkdir(s, name, "homework")
        put(s, name, "homework/answer.py", f"print('{name}')\n")
    put(sessions["alice"], "alice", "homework/essay.md", "# alice's essay\n")
    kernel = start_kernel(sessions["bob"], "bob")  # bob plants links to a classmate's home and to /etc
    execute(sessions["bob"], "bob", kernel, "import os; os.symlink('/etc', os.path.expanduser('~/homework/etc')); "
            "os.symlink('/home/alice', os.path.expanduser('~/homework/alice')); os.symlink('/etc', os.path.expanduser('~/lesson'))")
    return sessions


async def test_collect_and_distribute_through_the_hub(world, tmp_path, udevd, loops):
    await world.converge()
    homes = world.hub.paths.home
    uids = json.loads((world.hub.paths.state_dir / "uids.json").read_text())["users"]
    sessions = students_work(world)

    tree = stick_tree(tmp_path / "tree")  # the repository's custom/, with users.csv: it passes the home gate
    (tree / "conjuring" / "collect" / "homework").mkdir(parents=True)
    (tree / "conjuring" / "distribute" / "lesson").mkdir(parents=True)
    (tree / "conjuring" / "distribute" / "lesson" / "week1.ipynb").write_text("version 1\n")
    image = make_ext4_stick(tmp_path / "usb-hub.img", tree, size_mb=64)
    h = Harness(world.root)  # the hub's own state folder: the same uids.json, homes and distribute/
    h.home = homes
    await h.sticks.start(h.wakes.append)
    try:
        report = await insert(h, loops, image)
        assert "alice: collected 2 files (2 written" in report and "dora: collected 1 file " in report, report
        assert "bob: collected 1 file " in report and "etc: symbolic link" in report, report
        assert "bob: NOT given: ~/lesson is a symbolic link" in report, report
        rows = list(csv.DictReader(io.StringIO(ext4_read(image, "/conjuring/collect/homework/MANIFEST.csv").decode())))
        assert sorted((r["student"], r["file"]) for r in rows) == [
            ("alice", "answer.py"), ("alice", "essay.md"), ("bob", "answer.py"), ("dora", "answer.py")]
        for row in rows:
            data = ext4_read(image, f"/conjuring/collect/homework/{row['student']}/{row['file']}")
            assert data == (homes / row["student"] / "homework" / row["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
        for name in ("alice", "dora"):
            given = homes / name / "lesson" / "week1.ipynb"
            assert given.read_text() == "version 1\n" and given.stat().st_uid == uids[name]

        put(sessions["dora"], "dora", "homework/answer.py", "print('dora, v2')\n")
        put(sessions["alice"], "alice", "lesson/week1.ipynb", "alice's notes\n")
        device = loops.attach(image)  # the teacher edits the lesson on the stick, the collected work stays on it
        mounter = Mounter(tmp_path / "edit-media")
        mounted = mounter.mount(device, "ext4", read_only=False)
        try:
            (mounted.mount_point / "conjuring" / "distribute" / "lesson" / "week1.ipynb").write_text("version 2\n")
        finally:
            mounter.unmount(mounted)
        await h.import_and_report(device)
        loops.detach(device)
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert ", 1 written (" in report and "dora: collected 1 file (1 written, 0 unchanged)" in report, report
        assert "alice: 0 added, 0 updated, 0 already there, 1 kept" in report, report
        assert "dora: 0 added, 1 updated" in report, report
        assert (homes / "alice" / "lesson" / "week1.ipynb").read_text() == "alice's notes\n"
    finally:
        await h.sticks.close()

    users = (*USERS, ("erin", "erin-pw-1", False))
    world.config = replace(world.config, users=tuple(User(n, p, a, i + 2) for i, (n, p, a) in enumerate(users)))
    await world.converge()
    erin = login("erin", "erin-pw-1", world.base)
    assert erin.wait_lab("erin", 180) == 200
    status, _, body = erin.request("GET", "/user/erin/api/contents/lesson/week1.ipynb?content=1&format=text&type=file")
    assert status == 200 and json.loads(body)["content"] == "version 2\n", body[:300]
    uids = json.loads((world.hub.paths.state_dir / "uids.json").read_text())["users"]
    assert (homes / "erin" / "lesson" / "week1.ipynb").stat().st_uid == uids["erin"]
