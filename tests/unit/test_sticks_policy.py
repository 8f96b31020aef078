from conjuringd.config.model import UsbSettings
from conjuringd.sticks.policy import accepts, is_system_mount

USB_STICK = {
    "SUBSYSTEM": "block",
    "DEVTYPE": "partition",
    "DEVNAME": "/dev/sdb1",
    "ID_BUS": "usb",
    "ID_FS_USAGE": "filesystem",
    "ID_FS_TYPE": "vfat",
    "ID_FS_UUID": "1234-ABCD",
}
LOOP = {
    "SUBSYSTEM": "block",
    "DEVTYPE": "disk",
    "DEVNAME": "/dev/loop3",
    "ID_FS_USAGE": "filesystem",
    "ID_FS_TYPE": "ext4",
}
IMAGE = "/var/tmp/stick.img"
SATA = {**USB_STICK, "DEVNAME": "/dev/sda2", "ID_BUS": "ata", "ID_FS_TYPE": "ext4"}


def test_default_policy_accepts_usb_and_removable():
    assert accepts(USB_STICK, UsbSettings())
    assert accepts(USB_STICK, UsbSettings()).reason == "usb"
    assert accepts(SATA, UsbSettings(), removable=True).reason == "removable"


def test_default_policy_ignores_plain_loop_and_fixed_disks():
    assert not accepts(LOOP, UsbSettings())
    assert not accepts(SATA, UsbSettings())
    assert "accepted kinds" in accepts(SATA, UsbSettings()).reason


def test_loop_accepted_when_configured():
    assert accepts(LOOP, UsbSettings(accept=("loop",)), loop_backing=IMAGE)
    assert accepts(LOOP, UsbSettings(accept=("any",)), loop_backing=IMAGE)
    assert not accepts(USB_STICK, UsbSettings(accept=("loop",)))


def test_loop_with_usb_identity_accepted_by_default():
    assert accepts({**LOOP, "ID_BUS": "usb"}, UsbSettings(), loop_backing=IMAGE)


def test_loop_device_of_another_container_is_never_a_stick():
    """Loop devices are the kernel's: another container's (or a gone file's) is refused, whatever is accepted."""
    for usb in (UsbSettings(accept=("loop",)), UsbSettings(accept=("any",)), UsbSettings()):
        for props in (LOOP, {**LOOP, "ID_BUS": "usb"}):
            verdict = accepts(props, usb, loop_backing=None)
            assert not verdict and "not on this machine" in verdict.reason
    assert accepts(USB_STICK, UsbSettings(), loop_backing=None), "not a loop device: no backing file to have"


def test_loop_images_limits_loop_devices_to_one_folder(tmp_path):
    usb = UsbSettings(accept=("loop",), loop_images=str(tmp_path / "sticks"))
    (tmp_path / "sticks").mkdir()
    assert accepts(LOOP, usb, loop_backing=str(tmp_path / "sticks" / "a.img"))
    for outside in (tmp_path / "other.img", tmp_path / "sticks-old" / "a.img", tmp_path / "sticks" / ".." / "b.img"):
        verdict = accepts(LOOP, usb, loop_backing=str(outside))
        assert not verdict and "outside [usb] loop_images" in verdict.reason, outside
    (tmp_path / "sticks" / "link").symlink_to(tmp_path)
    assert not accepts(LOOP, usb, loop_backing=str(tmp_path / "sticks" / "link" / "c.img"))


def test_never_the_system_disk_even_with_any():
    verdict = accepts(SATA, UsbSettings(accept=("any",)), system_disk=True)
    assert not verdict and "running system" in verdict.reason
    assert not accepts(USB_STICK, UsbSettings(accept=("any",)), system_disk=True)


def test_never_a_device_mounted_as_part_of_the_system():
    for mp in ("/", "/boot", "/var/lib/docker", "/home"):
        verdict = accepts(USB_STICK, UsbSettings(accept=("any",)), mount_points=[mp])
        assert not verdict, mp
        assert mp in verdict.reason
    assert accepts(USB_STICK, UsbSettings(), mount_points=["/media/teacher/CONJURING"])
    assert accepts(USB_STICK, UsbSettings(), mount_points=["/run/conj/media/sdb1"], media_dir="/run/conj/media")


def test_needs_a_supported_filesystem():
    assert not accepts({**USB_STICK, "ID_FS_USAGE": "raid"}, UsbSettings())
    assert not accepts({**USB_STICK, "ID_FS_TYPE": "swap"}, UsbSettings())
    assert not accepts({k: v for k, v in USB_STICK.items() if k != "ID_FS_USAGE"}, UsbSettings())
    for fs in ("vfat", "exfat", "ext4", "ntfs"):
        assert accepts({**USB_STICK, "ID_FS_TYPE": fs}, UsbSettings())


def test_disabled_and_non_block():
    assert not accepts(USB_STICK, UsbSettings(enabled=False))
    assert not accepts({**USB_STICK, "DEVTYPE": "usb_device"}, UsbSettings())


def test_mmc():
    sd = {**SATA, "DEVNAME": "/dev/mmcblk0p1", "ID_BUS": ""}
    assert not accepts(sd, UsbSettings())
    assert accepts(sd, UsbSettings(accept=("usb", "mmc")))


def test_is_system_mount():
    assert is_system_mount("/")
    assert is_system_mount("/srv/data")
    assert not is_system_mount("/media/u/X")
    assert not is_system_mount("/mnt/stick")
    assert not is_system_mount("/tmp/x/media/loop0", "/tmp/x/media")
