"""Coursework through real sticks (udevd, loop devices, FAT and ext4): collect/ and distribute/."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from pathlib import Path

import pytest

from conjuringd.distribute import seed_new_homes
from tests.support.udev import (
    Harness, ext4_read, fat_list, fat_read, loops, make_ext4_stick, make_fat_stick, rewrite_ext4_stick, stick_tree, udevd,
)

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]

STUDENTS = {"alice": 2201, "bob": 2202, "carol": 2203}


def write_as(uid: int, path: Path, text: str) -> None:
    """Write a file as the student would (their UID, in a child process, from inside their home: pytest's
    folders above it are root's)."""
    home = next(p for p in path.parents if p.parent.name == "homes")
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(home)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            rel = path.relative_to(home)
            rel.parent.mkdir(parents=True, exist_ok=True)
            rel.write_text(text)
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0, f"could not write {path} as {uid}"


def make_homes(home: Path) -> None:
    home.chmod(0o755)
    for name, uid in STUDENTS.items():
        (home / name).mkdir()
        os.chown(home / name, uid, uid)
        write_as(uid, home / name / "homework" / "answer.py", f"print('{name}')\n")
        write_as(uid, home / name / "homework" / "data" / "table.csv", f"{name},42\n")
        write_as(uid, home / name / "notes.txt", "not part of the homework\n")


def manifest_rows(data: bytes) -> dict[tuple[str, str], dict]:
    return {(r["student"], r["file"]): r for r in csv.DictReader(io.StringIO(data.decode()))}


async def insert(h: Harness, loops, image: Path) -> None:
    device = loops.attach(image)
    await h.import_and_report(device)
    loops.detach(device)


async def test_collect_onto_fat_exact_files_no_links_then_only_the_change(tmp_path, udevd, loops):
    h = Harness(tmp_path / "h")
    make_homes(h.home)
    os.symlink(h.home / "alice", h.home / "bob" / "homework" / "classmate")  # planted by bob
    os.lchown(h.home / "bob" / "homework" / "classmate", 2202, 2202)
    os.rename(h.home / "carol" / "homework", h.home / "carol" / "old")
    os.symlink("/etc", h.home / "carol" / "homework")
    tree = stick_tree(tmp_path / "tree")
    (tree / "conjuring" / "collect" / "homework").mkdir(parents=True)
    image = make_fat_stick(tmp_path / "usb-c.img", tree, size_mb=64, upper=True)
    other = shutil.copytree(tree, tmp_path / "tree2")
    stranger = make_fat_stick(tmp_path / "usb-s.img", other, size_mb=32, upper=True, uuid="ABCD-1234")
    before = {p: p.lstat().st_mtime_ns for p in h.home.rglob("*")}
    await h.sticks.start(h.wakes.append)
    try:
        await insert(h, loops, image)
        report = fat_read(image, "CONJURING/REPORT.txt").decode()
        assert "alice: collected 2 files (2 written, 0 unchanged)" in report, report
        assert "bob: collected 2 files" in report and "classmate: symbolic link" in report, report
        assert "carol: NOT collected: ~/homework is a symbolic link: not followed" in report, report
        page = fat_read(image, "CONJURING/REPORT.html").decode()
        assert "Coursework (collect/ and distribute/)" in page and "alice: collected 2 files" in page, page[-3000:]
        rows = manifest_rows(fat_read(image, "CONJURING/COLLECT/HOMEWORK/MANIFEST.csv"))
        assert set(rows) == {(s, f) for s in ("alice", "bob") for f in ("answer.py", "data/table.csv")}
        for (student, rel), row in rows.items():
            data = fat_read(image, f"CONJURING/COLLECT/HOMEWORK/{student}/{rel}")
            assert data == (h.home / student / "homework" / rel).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row["sha256"] and int(row["size"]) == len(data)
        assert "passwd" not in fat_list(image, "CONJURING/COLLECT/HOMEWORK/carol").lower()
        assert "table.csv" not in fat_list(image, "CONJURING/COLLECT/HOMEWORK/bob/classmate").lower()
        assert {p: p.lstat().st_mtime_ns for p in h.home.rglob("*")} == before  # nothing in a home changed

        write_as(2202, h.home / "bob" / "homework" / "answer.py", "print('bob, corrected')\n")
        await insert(h, loops, image)
        report = fat_read(image, "CONJURING/REPORT.txt").decode()
        assert "alice: collected 2 files (0 written, 2 unchanged)" in report, report
        assert "bob: collected 2 files (1 written, 1 unchanged)" in report, report
        assert "2 student(s), 1 written" not in report and ", 1 written (" in report, report
        assert fat_read(image, "CONJURING/COLLECT/HOMEWORK/bob/answer.py") == b"print('bob, corrected')\n"

        await insert(h, loops, stranger)  # not enrolled here: gets nothing
        report = fat_read(stranger, "CONJURING/REPORT.txt").decode()
        assert "NOT ENROLLED" in report, report
        assert "alice" not in fat_list(stranger, "CONJURING/COLLECT/HOMEWORK").lower()
    finally:
        await h.sticks.close()


async def test_distribute_from_ext4_keeps_edits_and_reaches_new_homes(tmp_path, udevd, loops):
    h = Harness(tmp_path / "h")
    make_homes(h.home)
    elsewhere = tmp_path / "etc-standin"
    elsewhere.mkdir()
    os.symlink(elsewhere, h.home / "carol" / "lesson2")  # planted by carol
    tree = stick_tree(tmp_path / "tree")
    lesson = tree / "conjuring" / "distribute" / "lesson2"
    (lesson / "data").mkdir(parents=True)
    (lesson / "intro.ipynb").write_text("version 1\n")
    (lesson / "data" / "points.csv").write_text("1,2\n")
    image = make_ext4_stick(tmp_path / "usb-d.img", tree, size_mb=64)
    await h.sticks.start(h.wakes.append)
    try:
        await insert(h, loops, image)
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert "alice: 2 added, 0 updated" in report and "bob: 2 added" in report, report
        assert "carol: NOT given: ~/lesson2 is a symbolic link" in report, report
        for student in ("alice", "bob"):
            got = h.home / student / "lesson2" / "data" / "points.csv"
            assert got.read_text() == "1,2\n"
            assert {p.lstat().st_uid for p in (h.home / student / "lesson2").rglob("*")} == {STUDENTS[student]}
        assert list(elsewhere.iterdir()) == []

        write_as(2202, h.home / "bob" / "lesson2" / "intro.ipynb", "bob's answers\n")
        (lesson / "intro.ipynb").write_text("version 2\n")
        rewrite_ext4_stick(image, tree, size_mb=64)
        await insert(h, loops, image)
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert "alice: 0 added, 1 updated, 1 already there, 0 kept" in report, report
        assert "bob: 0 added, 0 updated, 1 already there, 1 kept" in report, report
        assert (h.home / "alice" / "lesson2" / "intro.ipynb").read_text() == "version 2\n"
        assert (h.home / "bob" / "lesson2" / "intro.ipynb").read_text() == "bob's answers\n"
    finally:
        await h.sticks.close()
    (h.home / "dave").mkdir()  # a student added afterwards: the docker adapter runs this after provisioning
    os.chown(h.home / "dave", 2204, 2204)
    seeded = seed_new_homes(h.paths.state_dir, h.home, {**STUDENTS, "dave": 2204})
    assert [s.student for r in seeded for s in r.students] == ["carol", "dave"]  # carol's link is still refused
    assert (h.home / "dave" / "lesson2" / "intro.ipynb").read_text() == "version 2\n"
    assert (h.home / "dave" / "lesson2" / "intro.ipynb").stat().st_uid == 2204
