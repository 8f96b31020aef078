"""A real systemd-udevd for tests, and loop-device "sticks" (ext4 and FAT images).

udevd runs in a private mount namespace whose rules dir holds only the block
rules plus a test rule that gives loop devices backed by `*/usb-*.img` the USB
identity (ID_BUS=usb), so the default stick policy can be tested with loop
devices. In CI (CI=true) a missing component fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conjuringd.adapters.udev import UdevSticks
from conjuringd.config.model import UsbSettings
from conjuringd.paths import Paths
from conjuringd.reconcile.model import ImportOutcome, ReportFacts
from conjuringd.store import SnapshotStore

REPO = Path(__file__).resolve().parents[2]
LOOPS = UsbSettings(accept=("loop",))  # Harness adds loop_images: this run's images only
FACTS = dict(hub_state="serving", hub_urls=("http://10.42.0.1:8989",), users=3, admins=1)

UDEVD = "/lib/systemd/systemd-udevd"
RULES = ("50-udev-default.rules", "60-block.rules", "60-persistent-storage.rules", "99-systemd.rules")
USB_RULE = (
    'SUBSYSTEM=="block", KERNEL=="loop*", ATTR{loop/backing_file}=="*/usb-*.img", '
    'ENV{ID_BUS}="usb", ENV{ID_USB_DRIVER}="usb-storage"\n'
)
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def unavailable(reason: str) -> None:
    """Skip, or fail in CI where every component must be present."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required for CI: {reason}")
    pytest.skip(reason)


def udevd_running() -> bool:
    return subprocess.run(["udevadm", "control", "--ping", "-t", "2"], capture_output=True).returncode == 0


class Udevd:
    """Our own systemd-udevd; reuses one that already answers (then leaves it running)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Udevd":
        if os.geteuid() != 0:
            unavailable("udev tests need root (loop devices, mounts, udevd)")
        for tool in (UDEVD, "/usr/sbin/losetup", "/usr/sbin/mkfs.ext4", "/usr/sbin/mkfs.vfat", "/usr/bin/mcopy",
                     "/usr/bin/fusefat", "/usr/sbin/mkfs.exfat", "/usr/sbin/mount.exfat-fuse"):
            if not os.path.exists(tool):
                unavailable(f"{tool} is not installed (.ci/install-deps.sh)")
        if udevd_running():
            return self
        rules, empty = self.workdir / "rules", self.workdir / "empty"
        rules.mkdir(parents=True, exist_ok=True)
        empty.mkdir(exist_ok=True)
        for name in RULES:
            shutil.copy(f"/usr/lib/udev/rules.d/{name}", rules / name)
        (rules / "90-conjuring-test-usb.rules").write_text(USB_RULE)
        script = (f"mount --bind {rules} /usr/lib/udev/rules.d && mount --bind {empty} /etc/udev/rules.d "
                  f"&& exec {UDEVD}")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                     stdout=open(self.workdir / "udevd.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not udevd_running():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                unavailable(f"systemd-udevd did not start: {(self.workdir / 'udevd.log').read_text()[-500:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def settle() -> None:
    subprocess.run(["udevadm", "settle", "-t", "10"], check=False)


# --- stick images -------------------------------------------------------------------


def make_ext4_stick(image: Path, tree: Path, label: str = "CONJURING", size_mb: int = 32, uuid: str = "") -> Path:
    image.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", *(["-U", uuid] if uuid else []), "-L", label, "-d", str(tree), str(image),
                    f"{size_mb}M"], check=True)
    return image


def fs_uuid(image: Path) -> str:
    return subprocess.run(["blkid", "-s", "UUID", "-o", "value", str(image)], check=True, capture_output=True,
                          text=True).stdout.strip()


def rewrite_ext4_stick(image: Path, tree: Path, label: str = "CONJURING", size_mb: int = 32) -> Path:
    """The teacher edits an enrolled stick: new content, the same filesystem (UUID) and conjuring/stick.key."""
    (tree / "conjuring" / "stick.key").write_bytes(ext4_read(image, "/conjuring/stick.key"))
    return make_ext4_stick(image, tree, label, size_mb, uuid=fs_uuid(image))


def make_fat_stick(image: Path, tree: Path, label: str = "CONJFAT", size_mb: int = 32, upper: bool = True,
                   uuid: str = "") -> Path:
    """A FAT image filled with mtools; `upper` stores every name in upper case (8.3 style);
    `uuid` ("ABCD-1234") sets the volume serial."""
    image.unlink(missing_ok=True)
    serial = ["-i", uuid.replace("-", "")] if uuid else []
    subprocess.run(["mkfs.vfat", "-C", *serial, "-n", label, str(image), str(size_mb * 1024)], check=True,
                   capture_output=True)
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = Path(dirpath).relative_to(tree)
        for name in sorted(dirnames):
            subprocess.run(["mmd", "-i", str(image), "::" + fat_name(rel / name, upper)], check=True, env=MTOOLS_ENV)
        for name in sorted(filenames):
            subprocess.run(["mcopy", "-i", str(image), str(Path(dirpath) / name), "::" + fat_name(rel / name, upper)],
                           check=True, env=MTOOLS_ENV)
    return image


def make_exfat_stick(image: Path, tree: Path, label: str = "CONJEX", size_mb: int = 32) -> Path:
    """An exFAT image filled through exfat-fuse (this kernel has no exfat). Attaches a loop device
    briefly: build it before a monitor that accepts loop devices is listening."""
    image.unlink(missing_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(size_mb * 2**20)
    subprocess.run(["mkfs.exfat", "-L", label, str(image)], check=True, capture_output=True)
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True).stdout.strip()
    mount_point = image.with_suffix(".mnt")
    mount_point.mkdir(exist_ok=True)
    try:
        subprocess.run(["mount.exfat-fuse", device, str(mount_point)], check=True, capture_output=True)
        try:
            shutil.copytree(tree, mount_point, dirs_exist_ok=True)
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
        mount_point.rmdir()
    return image


def fat_name(rel: Path, upper: bool) -> str:
    text = rel.as_posix()
    return text.upper() if upper else text


def fat_read(image: Path, path: str) -> bytes:
    return subprocess.run(["mtype", "-i", str(image), "::" + path], check=True, capture_output=True, env=MTOOLS_ENV).stdout


def fat_list(image: Path, path: str) -> str:
    return subprocess.run(["mdir", "-b", "-i", str(image), "::" + path], capture_output=True, text=True, env=MTOOLS_ENV).stdout


def ext4_read(image: Path, path: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], check=True, capture_output=True).stdout


# --- loop devices ----------------------------------------------------------------------


class Loops:
    """Attach images as loop devices; everything still attached is detached at the end, and a device
    that stays bound to its image (something still holds it: a mount left behind) fails the test."""

    def __init__(self):
        self.attached: dict[str, Path] = {}

    def attach(self, image: Path, *, read_only: bool = False) -> str:
        args = ["losetup", "-f", "--show", *(["-r"] if read_only else []), str(image)]
        device = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()
        self.attached[device] = image
        return device

    def detach(self, device: str) -> None:
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)  # deferred while held
        self.attached.pop(device, None)

    def close(self) -> None:
        images = dict(self.attached)
        for device in images:
            self.detach(device)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_bound(d, i) for d, i in images.items()):
            time.sleep(0.2)
        held = {d: _holders(d) for d, i in images.items() if _bound(d, i)}
        assert not held, f"loop devices still held after the test (mounts holding them): {held}"


def _bound(device: str, image: Path) -> bool:
    try:
        name = Path(f"/sys/block/{Path(device).name}/loop/backing_file").read_text().strip()
    except OSError:
        return False
    return name == str(image.resolve())


def _holders(device: str) -> list[str]:
    """The mounts of `device` in every process's mount namespace."""
    rdev = os.stat(device).st_rdev
    number = f"{os.major(rdev)}:{os.minor(rdev)}"
    found = set()
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            lines = mountinfo.read_text().splitlines()
        except OSError:
            continue
        found.update(f"pid {mountinfo.parent.name}: {line.split()[4]}" for line in lines if line.split()[2] == number)
    return sorted(found)[:10]


def udev_properties(device: str) -> dict[str, str]:
    out = subprocess.run(["udevadm", "info", "-q", "property", device], capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def kill_fuse_for(mount_point: Path) -> None:
    """Simulate a pulled FAT stick: the FUSE helper dies, reads fail with ENOTCONN."""
    out = subprocess.run(["pgrep", "-f", f"fusefat .* {mount_point}$"], capture_output=True, text=True).stdout
    for pid in out.split():
        os.kill(int(pid), 9)


# --- the adapter on its own, with the real snapshot store as importer ------------------

def stick_tree(root: Path, users: str | None = None) -> Path:
    custom = root / "conjuring" / "custom"
    shutil.copytree(REPO / "custom", custom)
    if users is not None:
        (custom / "users.csv").write_text(users)
    return root


def run_root(path: Path) -> Path:
    """This pytest run's base folder holding `path`: every image a test makes is under it, and loop
    devices that an earlier, killed run left attached (their images in an older pytest-N) are not."""
    for folder in (path, *path.parents):
        if folder.parent.name.startswith("pytest-of-"):
            return folder
    return path.parent


def loop_toml(path: Path, extra: str = "") -> str:
    """A machine conjuring.toml that takes loop devices as sticks, only those of this run."""
    return f'[usb]\naccept = ["loop"]\nloop_images = "{run_root(path)}"\n{extra}'


class Harness:
    def __init__(self, tmp_path: Path, usb: UsbSettings = LOOPS, copy_hook=None):
        if "loop" in usb.accept and not usb.loop_images:
            usb = dataclasses.replace(usb, loop_images=str(run_root(tmp_path)))
        self.paths = Paths(tmp_path / "state", tmp_path / "etc", tmp_path / "run", REPO / "custom")
        for folder in (self.paths.state_dir, self.paths.config_dir, self.paths.runtime_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.home = tmp_path / "homes"
        self.home.mkdir()
        self.usb = usb
        self.sticks = UdevSticks(self.paths, lambda: self.usb, lambda: self.home, copy_hook=copy_hook)
        self.store = SnapshotStore(self.paths)
        self.wakes: list[str] = []
        self.imported: list[tuple[str, dict]] = []

    async def importer(self, folder: str, source: dict) -> ImportOutcome:
        self.imported.append((folder, source))
        assert Path(folder).is_dir()
        return await asyncio.get_running_loop().run_in_executor(None, self.store.import_folder, Path(folder), source)

    async def wait_pending(self, device: str, pending: str = "import", timeout: float = 10):
        for _ in range(int(timeout / 0.02)):
            for stick in self.sticks.observe():
                if stick.device == device and stick.pending == pending:
                    return stick
            await asyncio.sleep(0.02)
        raise AssertionError(f"{device} never pending {pending}: {self.sticks.observe()}")

    async def import_and_report(self, device: str) -> str:
        stick = await self.wait_pending(device)
        await self.sticks.import_stick(device, stick.key, self.importer)
        await self.wait_pending(device, "report", timeout=1)
        state = self.store.state.read()
        facts = ReportFacts(**FACTS, active_config=state.active, active_source="the stick")
        await self.sticks.write_report(device, stick.key, facts)
        assert [s for s in self.sticks.observe() if s.device == device] == []
        return stick.key

    async def enrol(self, loops: "Loops", image: Path) -> str:
        """Enrol a stick the way `conjuringctl enroll` does (the adapter's enroll), then pull it; returns its id."""
        device = loops.attach(image)
        await self.wait_pending(device)
        answer = await self.sticks.enroll(device)
        loops.detach(device)
        for _ in range(200):
            if not [s for s in self.sticks.observe() if s.device == device]:
                break
            await asyncio.sleep(0.02)
        return answer["id"]

    def media_mounts(self) -> list[str]:
        return [line for line in open("/proc/self/mountinfo") if str(self.paths.media) in line]


@pytest.fixture(scope="session")
def udevd(tmp_path_factory):
    daemon = Udevd(tmp_path_factory.mktemp("udevd")).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def loops():
    tracker = Loops()
    yield tracker
    tracker.close()
