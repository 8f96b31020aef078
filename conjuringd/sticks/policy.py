"""Which block devices may be treated as configuration sticks.

`accepts()` is pure: it gets udev properties plus the few facts udev does not
carry (removable flag, where the device is mounted, whether it holds the
running system) and says yes or why not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from conjuringd.config.model import UsbSettings
from conjuringd.sticks.loopdev import under

SUPPORTED_FS = frozenset({"vfat", "exfat", "ext4", "ext3", "ext2", "ntfs", "ntfs3"})
KINDS = frozenset({"usb", "removable", "loop", "mmc", "any"})

# Mount points under these are "media", not part of the running system.
MEDIA_PREFIXES = ("/media/", "/run/media/", "/mnt/")


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str = ""  # why not (empty when accepted); how it matched when accepted

    def __bool__(self) -> bool:
        return self.accepted


def _kinds_of(props: Mapping[str, str], removable: bool) -> set[str]:
    kinds = {"any"}
    devname = props.get("DEVNAME", "")
    if props.get("ID_BUS") == "usb" or props.get("ID_USB_DRIVER") or "-usb-" in props.get("ID_PATH", ""):
        kinds.add("usb")
    if removable:
        kinds.add("removable")
    if devname.startswith("/dev/loop"):
        kinds.add("loop")
    if devname.startswith("/dev/mmcblk") or props.get("ID_DRIVE_FLASH_SD") == "1":
        kinds.add("mmc")
    return kinds


def _loop_verdict(props: Mapping[str, str], usb: UsbSettings, backing: str | None) -> Verdict | None:
    """Why a loop device is refused before its kind is even looked at, or None."""
    if not props.get("DEVNAME", "").startswith("/dev/loop"):
        return None
    if backing is None:
        return Verdict(False, "a loop device whose backing file is not on this machine (another container's, or gone)")
    if usb.loop_images and not under(backing, usb.loop_images):
        return Verdict(False, f"a loop device backed by {backing}, outside [usb] loop_images")
    return None


def is_system_mount(mount_point: str, media_dir: str = "") -> bool:
    """A mount point that is part of the running system (anything that is not removable media)."""
    if media_dir and (mount_point == media_dir or mount_point.startswith(media_dir.rstrip("/") + "/")):
        return False
    return not mount_point.startswith(MEDIA_PREFIXES)


def accepts(
    props: Mapping[str, str],
    usb: UsbSettings,
    *,
    removable: bool = False,
    mount_points: Iterable[str] = (),
    system_disk: bool = False,
    media_dir: str = "",
    loop_backing: str | None = None,
) -> Verdict:
    """May this device (udev `props`) be read as a configuration stick under `usb`?

    `mount_points`: where the device is mounted now; `system_disk`: the device
    (or its parent disk) holds the root filesystem or another system mount;
    `loop_backing`: for a loop device, its backing file when that file is this
    machine's own (loopdev.backing_file), else None.
    """
    if not usb.enabled:
        return Verdict(False, "USB sticks are disabled ([usb] enabled = false)")
    if props.get("SUBSYSTEM", "block") != "block" or props.get("DEVTYPE") not in ("disk", "partition"):
        return Verdict(False, "not a block disk or partition")
    if system_disk:
        return Verdict(False, "holds the running system")
    system = [m for m in mount_points if is_system_mount(m, media_dir)]
    if system:
        return Verdict(False, f"mounted as part of the running system at {system[0]}")
    if props.get("ID_FS_USAGE") != "filesystem":
        return Verdict(False, "no filesystem")
    fstype = props.get("ID_FS_TYPE", "")
    if fstype not in SUPPORTED_FS:
        return Verdict(False, f"unsupported filesystem {fstype!r}")
    loop = _loop_verdict(props, usb, loop_backing)
    if loop is not None:
        return loop
    matched = sorted(_kinds_of(props, removable) & set(usb.accept))
    if not matched:
        return Verdict(False, f"not one of the accepted kinds {list(usb.accept)}")
    return Verdict(True, matched[0])
