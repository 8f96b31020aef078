"""Hostile and fragile sticks: links out of the tree, FIFOs, huge sparse files, a stick pulled mid-copy."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conjuringd.config.model import UsbSettings
from tests.support.udev import REPO, Harness, stick_tree, ext4_read, fat_read, kill_fuse_for, loops, make_ext4_stick, make_fat_stick, udevd

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_links_fifo_and_sparse_file_are_refused_and_reported(tmp_path, udevd, loops):
    secret = tmp_path / "host-secret.txt"
    secret.write_bytes(b"HOST-ONLY-CONTENT-4f1c")
    tree = stick_tree(tmp_path / "tree")
    shared = tree / "conjuring/custom/shared"
    (shared / "passwords").symlink_to(secret)
    (shared / "etc").symlink_to("/etc")
    os.mkfifo(shared / "pipe")
    with open(shared / "huge.bin", "wb") as f:
        f.truncate(2 * 1024**3)  # exactly the default total limit: it used to refuse the whole stick, naming nothing else
    image = make_ext4_stick(tmp_path / "usb-h.img", tree, size_mb=64)
    h = Harness(tmp_path / "h", usb=UsbSettings(accept=("loop",)))  # the shipped limits
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await h.import_and_report(device)
        loops.detach(device)
    finally:
        await h.sticks.close()
    active = h.store.state.read().active
    assert active, "the rest of the configuration is applied"
    for path, data in tree_bytes(h.paths.state_dir).items():
        assert b"HOST-ONLY-CONTENT" not in data, path
    snapshot = h.paths.configs / active / "shared"
    assert sorted(os.listdir(snapshot)) == ["welcome.ipynb"]
    report = ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert f"shared/passwords: symbolic link to '{secret}'" in report
    assert "shared/etc: symbolic link to '/etc'" in report
    assert "shared/pipe: named pipe (FIFO) skipped" in report
    assert ("shared/huge.bin: 2147483648 bytes (0 bytes on disk: a sparse file), more than the limit for one file "
            "of 1073741824 bytes ([usb] max_file_bytes): skipped") in report
    assert "APPLIED" in report


async def test_over_the_total_limit_the_report_lists_every_refused_entry(tmp_path, udevd, loops):
    """Refused for size only when what would be imported is over the limit, and then every refused
    entry is still named, so the teacher knows what to remove."""
    tree = stick_tree(tmp_path / "tree")
    shared = tree / "conjuring/custom/shared"
    (shared / "passwords").symlink_to("/etc/shadow")
    (shared / "etc").symlink_to("/etc")
    os.mkfifo(shared / "pipe")
    for i in range(3):
        (shared / f"video{i}.bin").write_bytes(os.urandom(3 * 2**20))
    image = make_ext4_stick(tmp_path / "usb-t.img", tree, size_mb=64)
    h = Harness(tmp_path / "h", usb=UsbSettings(accept=("loop",), max_bytes=8 * 2**20, max_file_bytes=4 * 2**20))
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await h.import_and_report(device)
        loops.detach(device)
    finally:
        await h.sticks.close()
    assert h.store.state.read().active == "", "nothing is imported"
    report = ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert "INVALID" in report and "configuration refused, nothing imported: " in report
    assert "bytes would be imported, more than the limit of 8388608 ([usb] max_bytes)" in report
    for line in ("shared/passwords: symbolic link to '/etc/shadow'", "shared/etc: symbolic link to '/etc'",
                 "shared/pipe: named pipe (FIFO) skipped"):
        assert line in report


async def test_stick_pulled_mid_copy_keeps_previous_config(tmp_path, udevd, loops):
    tree = stick_tree(tmp_path / "tree")
    for i in range(40):
        (tree / "conjuring/custom/shared" / f"lesson{i:02d}.txt").write_text(f"lesson {i}\n" * 200)
    image = make_fat_stick(tmp_path / "usb-p.img", tree, upper=False)
    state = {}

    def pull(copied: int) -> None:
        if copied == 5:
            kill_fuse_for(h.paths.media / Path(state["device"]).name)
            subprocess.run(["losetup", "-d", state["device"]], check=True)

    h = Harness(tmp_path / "h", copy_hook=pull)
    previous = h.store.import_folder(REPO / "custom", {"kind": "local"})
    assert previous.result == "applied"
    before = tree_bytes(h.paths.configs / previous.config_hash)
    await h.sticks.start(h.wakes.append)
    try:
        state["device"] = device = loops.attach(image)
        stick = await h.wait_pending(device)
        with capture_logs() as logs:
            await h.sticks.import_stick(device, stick.key, h.importer)
        assert h.imported == [], "the importer is never called for a pulled stick"
        aborted = [e for e in logs if e["event"] == "stick_import_aborted"]
        assert aborted and aborted[0]["present"] is False, logs
        assert h.sticks.observe() == ()
        assert h.media_mounts() == []
        assert os.listdir(h.paths.staging) == []
        assert h.store.state.read().active == previous.config_hash
        assert tree_bytes(h.paths.configs / previous.config_hash) == before
    finally:
        await h.sticks.close()


async def test_fat_stick_with_one_file_too_big_applies_the_rest(tmp_path, udevd, loops):
    """FAT keeps no holes, so a 2 GiB file would need a 2 GiB image: the same rule with a 3 MiB file
    over a 2 MiB per-file limit (the ext4 test above uses the shipped limits)."""
    tree = stick_tree(tmp_path / "tree")
    (tree / "conjuring/custom/shared/lecture.mp4").write_bytes(os.urandom(3 * 2**20))
    image = make_fat_stick(tmp_path / "usb-big.img", tree, size_mb=16, upper=False)
    h = Harness(tmp_path / "h", usb=UsbSettings(accept=("loop",), max_file_bytes=2 * 2**20))
    await h.sticks.start(h.wakes.append)
    try:
        device = loops.attach(image)
        await h.import_and_report(device)
        loops.detach(device)
    finally:
        await h.sticks.close()
    active = h.store.state.read().active
    assert active and sorted(os.listdir(h.paths.configs / active / "shared")) == ["welcome.ipynb"]
    report = fat_read(image, "conjuring/REPORT.txt").decode()
    assert "APPLIED" in report
    # fusefat shows 8.3 names in upper case, and the file takes whole clusters
    assert re.search(r"shared/lecture\.mp4: \d+ bytes on disk \(3145728 bytes long\), more than the limit for one file "
                     r"of 2097152 bytes \(\[usb\] max_file_bytes\): skipped", report, re.IGNORECASE), report
