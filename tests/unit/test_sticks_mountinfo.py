from pathlib import Path

from conjuringd.adapters.mounts import kernel_type
from conjuringd.adapters.udev import stick_key
from conjuringd.sticks.mountinfo import containing_mount, mount_at, mounts_of, needs_archive, parse_mountinfo

SAMPLE = "\n".join([
    "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
    "40 27 8:17 / /media/teacher/MY\\040STICK rw,nosuid,nodev shared:20 - vfat /dev/sdb1 rw,fmask=0022",
    "41 27 0:62 / /run/conjuring/media/sdc1 ro,nosuid,nodev,noexec - fuse.fusefat fusefat ro,user_id=0",
    "42 27 8:33 / /srv/data rw - ext4 /dev/sdc1 rw",
])


def test_parse_unescapes_and_splits():
    entries = parse_mountinfo(SAMPLE)
    assert [e.mount_point for e in entries] == ["/", "/media/teacher/MY STICK", "/run/conjuring/media/sdc1", "/srv/data"]
    stick = entries[1]
    assert stick.fstype == "vfat" and stick.source == "/dev/sdb1" and stick.dev == "8:17" and not stick.read_only
    assert entries[2].read_only and entries[2].options == ("ro", "nosuid", "nodev", "noexec")


def test_lookups():
    entries = parse_mountinfo(SAMPLE)
    assert [e.mount_point for e in mounts_of(entries, "/dev/sdb1", "8:17")] == ["/media/teacher/MY STICK"]
    assert [e.mount_point for e in mounts_of(entries, "/dev/nope", "8:33")] == ["/srv/data"]
    assert mount_at(entries, "/srv/data").source == "/dev/sdc1"
    assert mount_at(entries, "/srv") is None
    assert containing_mount(entries, Path("/media/teacher/MY STICK/conjuring")).fstype == "vfat"


def test_needs_archive():
    assert needs_archive("vfat") and needs_archive("exfat") and needs_archive("fuse.fusefat") and needs_archive("ntfs3")
    assert not needs_archive("ext4") and not needs_archive("xfs")


def test_kernel_type():
    assert kernel_type("ext4", frozenset({"ext4"})) == "ext4"
    assert kernel_type("vfat", frozenset({"ext4"})) is None
    assert kernel_type("ntfs", frozenset({"ntfs3"})) == "ntfs3"


def test_stick_key_changes_with_each_insertion():
    a = stick_key({"ID_FS_UUID": "1234-ABCD", "DISKSEQ": "7", "SEQNUM": "100"})
    b = stick_key({"ID_FS_UUID": "1234-ABCD", "DISKSEQ": "7", "SEQNUM": "104"})  # a change event, same insertion
    c = stick_key({"ID_FS_UUID": "1234-ABCD", "DISKSEQ": "8", "SEQNUM": "120"})  # re-inserted
    assert a == b != c
    assert stick_key({"ID_FS_UUID": "X", "USEC_INITIALIZED": "55"}) == "X/55"


def test_insertion_order_follows_the_disk_sequence():
    from conjuringd.adapters.udev import insertion_order

    early = insertion_order({"DISKSEQ": "9", "USEC_INITIALIZED": "500"})
    late = insertion_order({"DISKSEQ": "10", "USEC_INITIALIZED": "400"})
    assert early < late
    assert insertion_order({"USEC_INITIALIZED": "x"}) == (0, 0)
