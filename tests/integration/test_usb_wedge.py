"""Sticks built to wedge or crash the stick worker, against the real udevd, loop devices and mounts:
each one gets a report naming the problem, and the next stick is handled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conjuringd.sticks.worker import StickDeadlines
from tests.support.udev import Harness, ext4_read, fat_read, loops, make_ext4_stick, make_fat_stick, stick_tree, udevd

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]
LIMIT = 60  # seconds: a wedged worker fails the test instead of hanging it


async def handle(h: Harness, device: str) -> None:
    await asyncio.wait_for(h.import_and_report(device), LIMIT)


async def next_stick_is_handled(h: Harness, loops, tmp_path: Path) -> None:
    image = make_ext4_stick(tmp_path / "usb-next.img", stick_tree(tmp_path / "next-tree", users="name,password,admin\nzoe,pw-zoe-1,\n"))
    await h.enrol(loops, image)  # the teacher's second stick: the first one was enrolled on first use
    device = loops.attach(image)
    await handle(h, device)
    loops.detach(device)
    assert "APPLIED" in ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert b"zoe" in (h.paths.configs / h.store.state.read().active / "users.csv").read_bytes()


def homes(h: Harness) -> None:
    (h.home / "ana").mkdir()
    (h.home / "ana" / "notes.txt").write_bytes(b"ana's notes\n")


async def test_fifos_named_like_our_files_never_block_the_worker(tmp_path, udevd, loops):
    tree = stick_tree(tmp_path / "tree")
    os.mkfifo(tree / "conjuring" / ".REPORT.txt.tmp")  # the report's old temp name
    (tree / "conjuring" / "home_backup").mkdir()
    os.mkfifo(tree / "conjuring" / "home_backup" / "MANIFEST.json")
    image = make_ext4_stick(tmp_path / "usb-fifo.img", tree)
    h = Harness(tmp_path / "h")
    homes(h)
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        started = time.monotonic()
        await handle(h, device)
        loops.detach(device)
        assert time.monotonic() - started < 20
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert "APPLIED" in report
        assert "backup NOT written: unreadable MANIFEST.json" in report and "is a named pipe (FIFO), not a regular file" in report
        await next_stick_is_handled(h, loops, tmp_path)
    finally:
        await h.sticks.close()


async def test_fifo_at_the_backup_temp_name_never_blocks(tmp_path, udevd, loops):
    tree = stick_tree(tmp_path / "tree")
    trap = tree / "conjuring" / "home_backup" / "homes" / "ana"
    trap.mkdir(parents=True)
    os.mkfifo(trap / ".notes.txt.conjuring-tmp")  # the backup's old fixed temp name
    image = make_ext4_stick(tmp_path / "usb-tmp.img", tree)
    h = Harness(tmp_path / "h")
    homes(h)
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await handle(h, device)
        loops.detach(device)
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert "backup written to conjuring/home_backup: 1 changed" in report, report
        assert ext4_read(image, "/conjuring/home_backup/homes/ana/notes.txt") == b"ana's notes\n"
        await next_stick_is_handled(h, loops, tmp_path)
    finally:
        await h.sticks.close()


def deep_folders(root: Path, depth: int, name: str = "d") -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = sub
    os.close(fd)


async def test_a_tree_1500_folders_deep_is_cut_and_reported(tmp_path, udevd, loops):
    image = make_ext4_stick(tmp_path / "usb-deep.img", stick_tree(tmp_path / "tree"))
    script = tmp_path / "deep.debugfs"  # mkfs.ext4 -d aborts on such a tree: debugfs builds it in the image
    script.write_text("cd /conjuring/custom/shared\n" + "mkdir d\ncd d\n" * 1500)
    subprocess.run(["debugfs", "-w", "-f", str(script), str(image)], check=True, capture_output=True)
    deepest = subprocess.run(["debugfs", "-R", "stat /conjuring/custom/shared" + "/d" * 1500, str(image)],
                             capture_output=True, text=True).stdout
    assert "Type: directory" in deepest
    h = Harness(tmp_path / "h")
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await handle(h, device)
        loops.detach(device)
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert "APPLIED" in report
        assert f"shared/{'d/' * 63}d: folder nested more than 64 levels deep: skipped with everything in it" in report
        await next_stick_is_handled(h, loops, tmp_path)
    finally:
        await h.sticks.close()


async def test_fat_stick_with_a_deep_tree_and_a_manifest_that_is_a_list(tmp_path, udevd, loops):
    tree = stick_tree(tmp_path / "tree")
    deep_folders(tree / "conjuring/custom/shared", 70, "D")
    (tree / "conjuring/home_backup").mkdir()
    (tree / "conjuring/home_backup/MANIFEST.json").write_text("[]")  # raised AttributeError, the stick stayed pending
    image = make_fat_stick(tmp_path / "usb-fat.img", tree, upper=False)
    h = Harness(tmp_path / "h")
    homes(h)
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await handle(h, device)
        loops.detach(device)
        report = fat_read(image, "conjuring/REPORT.txt").decode()
        assert "APPLIED" in report
        assert "folder nested more than 64 levels deep" in report
        assert "backup NOT written: MANIFEST.json should hold an object, not list" in report
        await next_stick_is_handled(h, loops, tmp_path)
    finally:
        await h.sticks.close()


async def test_ext4_manifest_with_unknown_keys_is_named_in_the_report(tmp_path, udevd, loops):
    tree = stick_tree(tmp_path / "tree")
    (tree / "conjuring/home_backup").mkdir()
    (tree / "conjuring/home_backup/MANIFEST.json").write_text('{"mode": "mirror", "entries": [], "owner": "eve"}')
    image = make_ext4_stick(tmp_path / "usb-keys.img", tree)
    h = Harness(tmp_path / "h")
    homes(h)
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await handle(h, device)
        loops.detach(device)
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert "APPLIED" in report and "backup NOT written: MANIFEST.json has unknown keys: owner" in report
        await next_stick_is_handled(h, loops, tmp_path)
    finally:
        await h.sticks.close()


def fuse_helper_of(mount_point: Path) -> int:
    out = subprocess.run(["pgrep", "-f", f"fusefat .* {mount_point}$"], capture_output=True, text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


async def test_a_stick_that_stops_answering_is_abandoned_at_the_deadline(tmp_path, udevd, loops):
    tree = stick_tree(tmp_path / "tree")
    for i in range(20):
        (tree / "conjuring/custom/shared" / f"lesson{i:02d}.txt").write_text(f"lesson {i}\n" * 100)
    image = make_fat_stick(tmp_path / "usb-hang.img", tree, upper=False)
    stopped: list[int] = []

    def hang(copied: int) -> None:  # the FUSE helper stops answering mid-copy: every read blocks
        if copied == 3 and not stopped:
            pid = fuse_helper_of(h.paths.media / Path(device).name)
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    h = Harness(tmp_path / "h", copy_hook=hang)
    h.sticks._deadlines = StickDeadlines(stage=4, backup=4, report=20, other=20)
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        started = time.monotonic()
        await handle(h, device)
        assert 4 <= time.monotonic() - started < 30
        loops.detach(device)
        assert stopped and not os.path.exists(f"/proc/{stopped[0]}/status") or "zombie" in open(f"/proc/{stopped[0]}/status").read()
        report = fat_read(image, "conjuring/REPORT.txt").decode()
        assert "FAILED" in report and "the stick stopped answering: copying the configuration did not finish within 4 s, so the stick was abandoned" in report
        assert h.media_mounts() == []
        await next_stick_is_handled(h, loops, tmp_path)
    finally:
        await h.sticks.close()


async def test_an_unforeseen_error_is_that_sticks_failed_report_and_the_next_stick_is_handled(tmp_path, udevd, loops, monkeypatch):
    """Fault injection: whatever a stick makes go wrong (here a KeyError from deep inside the copy),
    it no longer escapes the adapter and leaves the stick pending for ever."""
    from conjuringd.adapters import udev as udev_mod
    real = udev_mod.stage_custom
    calls = []

    def broken_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("what nobody foresaw")
        return real(*args, **kwargs)

    monkeypatch.setattr(udev_mod, "stage_custom", broken_once)
    image = make_ext4_stick(tmp_path / "usb-odd.img", stick_tree(tmp_path / "tree"))
    h = Harness(tmp_path / "h")
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await handle(h, device)
        loops.detach(device)
        report = ext4_read(image, "/conjuring/REPORT.txt").decode()
        assert "FAILED" in report
        assert "unexpected error while reading the stick: KeyError: 'what nobody foresaw' (nothing was imported)" in report
        assert h.sticks.counters["failed"] == 1 and h.media_mounts() == []
        await next_stick_is_handled(h, loops, tmp_path)
    finally:
        await h.sticks.close()
