"""Collect and distribute on real folders (tmp): FAT names, manifest, limits, symlinks, ownership."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

import pytest

from conjuringd.collect import MANIFEST_CSV, CoursefolderError, check_folder_name, collect_homes, parse_manifest, render_manifest, Row
from conjuringd.distribute import distribute_folder, seed_new_homes, store_distribution, store_dir
from conjuringd.fatnames import FatNamer, FatTree, fat_safe
from conjuringd.sticks.copy import CopyLimits

UIDS = {"alice": 2101, "bob": 2102, "carol": 2103}


def test_fat_safe_names():
    assert fat_safe("notes.ipynb") == "notes.ipynb"
    assert fat_safe('a:b?"c*.txt') == "a_b__c_.txt"
    assert fat_safe("trailing. ") == "trailing"
    assert fat_safe("CON.txt") == "_CON.txt"
    assert fat_safe("nul") == "_nul"
    assert len(fat_safe("x" * 300 + ".ipynb")) == 255 and fat_safe("x" * 300 + ".ipynb").endswith(".ipynb")


def test_fat_namer_makes_case_clashes_unique():
    namer = FatNamer()
    assert [namer.name(n) for n in ("Data.csv", "data.csv", "DATA.CSV")] == ["Data.csv", "data~2.csv", "DATA~3.CSV"]
    tree = FatTree()
    assert tree.path(("alice", "a:b", "x")) == ("alice", "a_b", "x")
    assert tree.path(("alice", "a_b", "x")) == ("alice", "a_b~2", "x")
    assert tree.path(("alice", "a:b", "y")) == ("alice", "a_b", "y")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", ".hidden", "a\\b"])
def test_folder_names_refused(bad):
    with pytest.raises(CoursefolderError):
        check_folder_name(bad)


def test_manifest_round_trip_and_garbage():
    rows = [Row("bob", "a:b.txt", 3, 1_700_000_000_123_456_789, "a" * 64, "bob/a_b.txt"), Row("alice", "x", 0, 5, "b" * 64)]
    parsed = parse_manifest(render_manifest(rows))
    assert parsed[("bob", "a:b.txt")] == rows[0] and parsed[("alice", "x")] == rows[1]
    assert parse_manifest(b"student,file\r\nnot,enough\r\n\x00\xff") == {}


def make_homes(home: Path) -> None:
    for name, uid in UIDS.items():
        folder = home / name / "homework"
        folder.mkdir(parents=True)
        (folder / "answer.py").write_text(f"print('{name}')\n")
        (folder / "sub").mkdir()
        (folder / "sub" / "data.csv").write_text(f"{name},1\n")
        for path in [home / name, *(home / name).rglob("*")]:
            os.lchown(path, uid, uid)


def manifest(dest: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((dest / MANIFEST_CSV).read_text())))


def test_collect_exactly_the_files_then_only_what_changed(tmp_path):
    home, dest = tmp_path / "home", tmp_path / "stick" / "homework"
    make_homes(home)
    (home / "carol" / "homework" / "what?.txt").write_text("odd name\n")
    (home / "bob" / "homework" / "etc").symlink_to("/etc")
    (home / "bob" / "homework" / "alice").symlink_to(home / "alice")
    (home / "alice" / "homework" / "passwd").symlink_to("/etc/passwd")
    first = collect_homes(home, "homework", dest, CopyLimits())
    assert [s.state for s in first.students] == ["collected"] * 3
    rows = manifest(dest)
    assert sorted((r["student"], r["file"]) for r in rows) == sorted(
        [(s, f) for s in UIDS for f in ("answer.py", "sub/data.csv")] + [("carol", "what?.txt")])
    for row in rows:
        stored = dest / (row["stored_as"] or f"{row['student']}/{row['file']}")
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == row["sha256"]
        assert int(row["size"]) == stored.stat().st_size
    assert [r["stored_as"] for r in rows if r["file"] == "what?.txt"] == ["carol/what_.txt"]
    assert not (dest / "bob" / "etc").exists() and not (dest / "bob" / "alice").exists() and not (dest / "alice" / "passwd").exists()
    assert any("symbolic link" in n for n in first.students[1].notes)
    (home / "bob" / "homework" / "answer.py").write_text("print('changed')\n")
    second = collect_homes(home, "homework", dest, CopyLimits())
    assert sum(s.written for s in second.students) == 1 and second.students[1].written == 1
    assert (dest / "bob" / "answer.py").read_text() == "print('changed')\n"


def test_collect_refuses_a_linked_folder_and_reports_limits(tmp_path):
    home, dest = tmp_path / "home", tmp_path / "dest"
    make_homes(home)
    os.rename(home / "bob" / "homework", home / "bob" / "old")
    (home / "bob" / "homework").symlink_to(home / "alice" / "homework")
    for i in range(4):
        (home / "carol" / "homework" / f"part{i}.bin").write_bytes(b"x" * 4000)
    (home / "dave").mkdir()
    os.chown(home / "dave", 2104, 2104)
    result = collect_homes(home, "homework", dest, CopyLimits(max_bytes=16384))
    by = {s.student: s for s in result.students}
    assert by["alice"].state == "collected"
    assert by["bob"].state == "refused" and "symbolic link" in by["bob"].message and not (dest / "bob").exists()
    assert by["carol"].state == "over-limit" and "nothing collected" in by["carol"].line("homework")
    assert by["dave"].state == "nothing" and "nothing to collect" in by["dave"].line("homework")
    assert {r.student for r in result.rows} == {"alice"}


def teacher(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "lesson2"
    (src / "data").mkdir(parents=True)
    (src / "intro.ipynb").write_text("v1\n")
    (src / "data" / "points.csv").write_text("1,2\n")
    return src


def test_distribute_adds_keeps_edits_updates_untouched(tmp_path):
    home, state = tmp_path / "home", tmp_path / "state"
    make_homes(home)
    src = teacher(tmp_path)
    store_distribution(src, "lesson2", state, CopyLimits())
    first = distribute_folder(state, "lesson2", home, UIDS)
    assert [(s.added, s.kept) for s in first.students] == [(2, 0)] * 3
    got = home / "alice" / "lesson2" / "data" / "points.csv"
    assert got.read_text() == "1,2\n" and got.stat().st_uid == UIDS["alice"] and got.parent.stat().st_uid == UIDS["alice"]
    (home / "bob" / "lesson2" / "intro.ipynb").write_text("bob's answers\n")
    (src / "intro.ipynb").write_text("v2\n")
    store_distribution(src, "lesson2", state, CopyLimits())
    second = {s.student: s for s in distribute_folder(state, "lesson2", home, UIDS).students}
    assert (second["alice"].updated, second["alice"].same) == (1, 1)
    assert (second["bob"].kept, second["bob"].updated) == (1, 0)
    assert (home / "bob" / "lesson2" / "intro.ipynb").read_text() == "bob's answers\n"
    assert (home / "alice" / "lesson2" / "intro.ipynb").read_text() == "v2\n"


def test_distribute_never_follows_a_planted_link(tmp_path):
    home, state = tmp_path / "home", tmp_path / "state"
    make_homes(home)
    target = tmp_path / "etc"
    target.mkdir()
    (home / "bob" / "lesson2").symlink_to(target)
    (home / "carol" / "lesson2").mkdir()
    os.chown(home / "carol" / "lesson2", UIDS["carol"], UIDS["carol"])
    (home / "carol" / "lesson2" / "data").symlink_to(home / "alice")
    (home / "carol" / "lesson2" / "intro.ipynb").symlink_to(target / "intro")
    store_distribution(teacher(tmp_path), "lesson2", state, CopyLimits())
    result = {s.student: s for s in distribute_folder(state, "lesson2", home, UIDS).students}
    assert "symbolic link" in result["bob"].refused and list(target.iterdir()) == []
    assert result["carol"].added == 0 and result["carol"].kept == 2
    assert not (home / "alice" / "points.csv").exists() and not (target / "intro").exists()


def test_new_homes_are_seeded_once(tmp_path):
    home, state = tmp_path / "home", tmp_path / "state"
    make_homes(home)
    store_distribution(teacher(tmp_path), "lesson2", state, CopyLimits())
    distribute_folder(state, "lesson2", home, UIDS)
    (home / "dave").mkdir()
    os.chown(home / "dave", 2104, 2104)
    (home / "alice" / "lesson2" / "intro.ipynb").unlink()
    results = seed_new_homes(state, home, {**UIDS, "dave": 2104})
    assert [[s.student for s in r.students] for r in results] == [["dave"]]
    assert (home / "dave" / "lesson2" / "intro.ipynb").stat().st_uid == 2104
    assert not (home / "alice" / "lesson2" / "intro.ipynb").exists()  # a deleted file is not given again
    assert (store_dir(state, "lesson2") / "given.json").exists()


def test_distribute_refuses_a_home_of_the_wrong_owner(tmp_path):
    home, state = tmp_path / "home", tmp_path / "state"
    make_homes(home)
    store_distribution(teacher(tmp_path), "lesson2", state, CopyLimits())
    result = {s.student: s for s in distribute_folder(state, "lesson2", home, {**UIDS, "bob": 2999}).students}
    assert "UID 2102" in result["bob"].refused and not (home / "bob" / "lesson2").exists()


def test_collect_never_writes_through_a_link_on_the_destination(tmp_path):
    home, dest, outside = tmp_path / "home", tmp_path / "stick" / "homework", tmp_path / "outside"
    make_homes(home)
    dest.mkdir(parents=True)
    outside.mkdir()
    (dest / "alice").symlink_to(outside)  # planted on the stick
    result = {s.student: s for s in collect_homes(home, "homework", dest, CopyLimits()).students}
    assert result["alice"].state == "not-written" and list(outside.iterdir()) == []
    assert result["bob"].state == "collected" and (dest / "bob" / "answer.py").exists()
    assert {r["student"] for r in manifest(dest)} == {"bob", "carol"}
