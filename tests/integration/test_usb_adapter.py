"""The udev stick adapter against a real systemd-udevd, real loop devices and real mounts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conjuringd.adapters.mounts import Mounter
from conjuringd.config.model import UsbSettings
from tests.support.udev import (
    REPO, Harness, ext4_read, fat_list, fat_read, loops, make_ext4_stick, make_exfat_stick, make_fat_stick, settle,
    stick_tree, udev_properties, udevd,
)

pytestmark = pytest.mark.udev
__all__ = ["loops", "udevd"]


@pytest.fixture
async def harness(tmp_path, udevd):
    h = Harness(tmp_path)
    yield h
    await h.sticks.close()


async def test_ext4_stick_is_imported_and_reported(harness, tmp_path, loops):
    await harness.sticks.start(harness.wakes.append)
    image = make_ext4_stick(tmp_path / "usb-a.img", stick_tree(tmp_path / "tree"))
    device = loops.attach(image)
    await harness.import_and_report(device)
    assert harness.wakes and harness.wakes[0] == f"stick {device}"
    folder, source = harness.imported[0]
    assert source["kind"] == "stick" and source["label"] == "CONJURING" and source["uuid"]
    assert not Path(folder).exists()  # staging is cleaned up
    active = harness.store.state.read().active
    assert (harness.paths.configs / active / "users.csv").read_bytes() == (REPO / "custom/users.csv").read_bytes()
    assert harness.media_mounts() == []
    loops.detach(device)
    report = ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert "APPLIED" in report and "http://10.42.0.1:8989" in report and "\r\n" in report


async def test_fat_stick_with_upper_case_names(harness, tmp_path, loops):
    await harness.sticks.start(harness.wakes.append)
    image = make_fat_stick(tmp_path / "usb-f.img", stick_tree(tmp_path / "tree"), upper=True)
    assert "CONJURING" in fat_list(image, "/")
    device = loops.attach(image)
    await harness.import_and_report(device)
    active = harness.store.state.read().active
    snapshot = harness.paths.configs / active
    assert (snapshot / "users.csv").read_bytes() == (REPO / "custom/users.csv").read_bytes()
    assert (snapshot / "shared" / "WELCOME.IPYNB").exists()
    assert harness.media_mounts() == []
    loops.detach(device)
    report = fat_read(image, "CONJURING/REPORT.txt").decode()
    assert "APPLIED" in report and "http://10.42.0.1:8989" in report


async def test_stick_already_attached_at_start(harness, tmp_path, loops):
    device = loops.attach(make_ext4_stick(tmp_path / "usb-a.img", stick_tree(tmp_path / "tree")))
    settle()
    await harness.sticks.start(harness.wakes.append)
    assert [s.device for s in harness.sticks.observe()] == [device]
    await harness.import_and_report(device)
    assert harness.store.state.read().active


async def test_reattach_is_a_new_insertion_and_unchanged(harness, tmp_path, loops):
    await harness.sticks.start(harness.wakes.append)
    image = make_ext4_stick(tmp_path / "usb-a.img", stick_tree(tmp_path / "tree"))
    device = loops.attach(image)
    first = await harness.import_and_report(device)
    loops.detach(device)
    await asyncio.sleep(0.3)
    device = loops.attach(image)
    second = await harness.import_and_report(device)
    assert second != first
    loops.detach(device)
    assert "UNCHANGED" in ext4_read(image, "/conjuring/REPORT.txt").decode()


async def test_default_policy_usb_identity_accepted_plain_loop_ignored(tmp_path, udevd, loops):
    h = Harness(tmp_path, usb=UsbSettings())
    try:
        with capture_logs() as logs:
            await h.sticks.start(h.wakes.append)
            plain = loops.attach(make_ext4_stick(tmp_path / "plain.img", stick_tree(tmp_path / "t1")))
            usb = loops.attach(make_ext4_stick(tmp_path / "usb-b.img", stick_tree(tmp_path / "t2")))
            await h.wait_pending(usb)
            settle()
            await asyncio.sleep(0.2)
        assert udev_properties(usb).get("ID_BUS") == "usb" and "ID_BUS" not in udev_properties(plain)
        assert [s.device for s in h.sticks.observe()] == [usb]
        ignored = [e for e in logs if e["event"] == "device_ignored" and e["device"] == plain]
        assert ignored and "accepted kinds" in ignored[0]["reason"]
    finally:
        await h.sticks.close()


async def test_removed_stick_drops_pending_work(harness, tmp_path, loops):
    await harness.sticks.start(harness.wakes.append)
    device = loops.attach(make_ext4_stick(tmp_path / "usb-a.img", stick_tree(tmp_path / "tree")))
    stick = await harness.wait_pending(device)
    loops.detach(device)
    for _ in range(200):
        if not harness.sticks.observe():
            break
        await asyncio.sleep(0.02)
    assert harness.sticks.observe() == ()
    await harness.sticks.import_stick(device, stick.key, harness.importer)  # stale work: nothing happens
    assert harness.imported == []


async def test_not_a_conjuring_stick_is_dropped_quietly(harness, tmp_path, loops):
    await harness.sticks.start(harness.wakes.append)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    device = loops.attach(make_ext4_stick(tmp_path / "usb-p.img", tmp_path / "photos"))
    stick = await harness.wait_pending(device)
    await harness.sticks.import_stick(device, stick.key, harness.importer)
    assert harness.imported == [] and harness.sticks.observe() == () and harness.media_mounts() == []


async def test_invalid_users_csv_report_lists_problems(harness, tmp_path, loops):
    await harness.sticks.start(harness.wakes.append)
    broken = "name,password,admin\nana,secret1,yes\nbob,secret2\nana,secret3,no\n"
    image = make_ext4_stick(tmp_path / "usb-a.img", stick_tree(tmp_path / "tree", users=broken))
    device = loops.attach(image)
    await harness.import_and_report(device)
    loops.detach(device)
    report = ext4_read(image, "/conjuring/REPORT.txt").decode()
    assert "INVALID" in report
    assert "users.csv:4" in report and "duplicate" in report, report
    assert "http://10.42.0.1:8989" in report


async def test_read_only_stick_report_is_dropped(harness, tmp_path, loops):
    await harness.sticks.start(harness.wakes.append)
    image = make_ext4_stick(tmp_path / "usb-a.img", stick_tree(tmp_path / "tree"))
    await harness.enrol(loops, image)  # a read-only stick cannot take a credential: enrol it while writable
    device = loops.attach(image, read_only=True)
    with capture_logs() as logs:
        await harness.import_and_report(device)
    assert harness.store.state.read().active
    assert any(e["event"] == "report_not_written" for e in logs)
    assert harness.media_mounts() == []


async def test_device_mounted_as_part_of_the_system_is_ignored(harness, tmp_path, loops):
    device = loops.attach(make_ext4_stick(tmp_path / "usb-s.img", stick_tree(tmp_path / "tree")))
    settle()
    system_mount = tmp_path / "srv-data"
    system_mount.mkdir()
    subprocess.run(["mount", "-o", "ro", device, str(system_mount)], check=True)
    try:
        with capture_logs() as logs:
            await harness.sticks.start(harness.wakes.append)
        assert harness.sticks.observe() == ()
        ignored = [e for e in logs if e["event"] == "device_ignored" and e["device"] == device]
        assert ignored and "running system" in ignored[0]["reason"]
    finally:
        subprocess.run(["umount", str(system_mount)], check=True)


async def test_desktop_mount_is_used_and_left_alone(harness, tmp_path, loops):
    image = make_ext4_stick(tmp_path / "usb-d.img", stick_tree(tmp_path / "tree"))
    device = loops.attach(image)
    settle()
    desktop = Path("/media") / f"conjuring-test-{os.getpid()}" / "CONJURING"  # where a desktop would mount it
    desktop.mkdir(parents=True)
    subprocess.run(["mount", device, str(desktop)], check=True)
    try:
        with capture_logs() as logs:
            await harness.sticks.start(harness.wakes.append)
            await harness.import_and_report(device)
        assert any(e["event"] == "stick_using_existing_mount" for e in logs)
        assert harness.media_mounts() == []
        assert any(line.split()[4] == str(desktop) for line in open("/proc/self/mountinfo"))  # still mounted
        assert "APPLIED" in (desktop / "conjuring" / "REPORT.txt").read_text()
    finally:
        subprocess.run(["umount", str(desktop)], check=True)
        shutil.rmtree(desktop.parent)


async def test_read_only_desktop_mount_gets_a_private_rw_mount_for_the_report(harness, tmp_path, loops):
    image = make_ext4_stick(tmp_path / "usb-d.img", stick_tree(tmp_path / "tree"))
    device = loops.attach(image)
    settle()
    desktop = Path("/media") / f"conjuring-test-ro-{os.getpid()}" / "CONJURING"
    desktop.mkdir(parents=True)
    subprocess.run(["mount", device, str(desktop)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(desktop)], check=True)  # this mount ro, the fs rw
    try:
        with capture_logs() as logs:
            await harness.sticks.start(harness.wakes.append)
            await harness.import_and_report(device)
        assert any(e["event"] == "stick_desktop_mount_read_only" for e in logs)
        assert any(e["event"] == "report_written" for e in logs)
        assert harness.media_mounts() == []
        assert "APPLIED" in (desktop / "conjuring" / "REPORT.txt").read_text()
    finally:
        subprocess.run(["umount", str(desktop)], check=True)
        shutil.rmtree(desktop.parent)


async def test_exfat_stick_through_fuse(harness, tmp_path, loops):
    image = make_exfat_stick(tmp_path / "usb-x.img", stick_tree(tmp_path / "tree"))
    settle()
    await harness.sticks.start(harness.wakes.append)
    device = loops.attach(image)
    await harness.import_and_report(device)
    active = harness.store.state.read().active
    assert (harness.paths.configs / active / "users.csv").read_bytes() == (REPO / "custom/users.csv").read_bytes()
    assert harness.media_mounts() == []
    loops.detach(device)
    check = Mounter(tmp_path / "check")
    device = loops.attach(image)
    mounted = check.mount(device, "exfat")
    try:
        assert "APPLIED" in (mounted.mount_point / "conjuring" / "REPORT.txt").read_text()
    finally:
        check.unmount(mounted)


async def test_loop_devices_of_another_container_or_an_earlier_run_are_not_sticks(harness, tmp_path, loops):
    """Loop devices belong to the kernel: every container on the host sees every one. A teacher's stick image
    attached from another mount namespace (a co-tenant container: here `unshare -m` over a private tmpfs, kept
    alive), even where the same path here names a copy of it, and one left by an earlier, killed run (its image
    outside this run's [usb] loop_images), are neither read nor reported; this run's own stick still is."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    image = make_ext4_stick(tmp_path / "usb-a.img", stick_tree(tmp_path / "tree"))
    other = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs none {theirs} && cp {image} {theirs}/usb.img && losetup -f --show {theirs}/usb.img"
         " && exec sleep 60"], stdout=subprocess.PIPE, text=True)
    try:
        foreign = other.stdout.readline().strip()
        assert foreign.startswith("/dev/loop"), "the co-tenant could not attach its image"
        loops.attached[foreign] = theirs / "usb.img"
        shutil.copy(image, theirs / "usb.img")  # here, that path names another file with the same bytes
        old_run = tmp_path.parent.parent / f"{tmp_path.parent.name}-earlier-run.img"  # outside this run's folder
        shutil.copy(image, old_run)
        stale = loops.attach(old_run)
        with capture_logs() as logs:
            await harness.sticks.start(harness.wakes.append)
            settle()
            await asyncio.sleep(0.5)
            assert harness.sticks.observe() == () and harness.wakes == []
            mine = loops.attach(image)
            await harness.wait_pending(mine)
        reasons = {e["device"]: e["reason"] for e in logs if e["event"] == "device_ignored"}
        assert "not on this machine" in reasons.get(foreign, ""), reasons
        assert "outside [usb] loop_images" in reasons.get(stale, ""), reasons
        assert [s.device for s in harness.sticks.observe()] == [mine]
    finally:
        other.kill()
        other.wait()
        old_run.unlink(missing_ok=True)
