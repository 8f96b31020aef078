"""A classroom box under attack: the real conjuringd with the docker hub, and hostile sticks built at run time.

`Box` runs the daemon (--hub docker --network none --usb udev) against temp folders; `plug()` attaches a
stick image as a loop device, waits for the daemon's report on it and returns what the stick says.
`serving()` and `leaked()` are what every hostile-stick test checks afterwards: the previous hub keeps
serving, and nothing of the box (a student's home, /etc, a secret) is on the stick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import REPO, Daemon
from tests.support.docker import DOCKER
from tests.support.hubworld import login
from tests.support.udev import MTOOLS_ENV, Loops, ext4_read, fat_read, make_ext4_stick, make_fat_stick

HUB = "conjuring"  # the daemon's own container name
PORT = 8989
BASE = f"http://127.0.0.1:{PORT}"
PROXY_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_NAME = "classroom-proxy-ca.crt"
LESSON = "lesson-one.txt"
STUDENT = ("kid1", "kid1-pass-2026")
HOME_MARKER = b"HOMEWORK-OF-A-FORMER-STUDENT-7c2e91"  # inside a home on the box, never on a hostile stick


def classroom_custom(custom: Path) -> Path:
    """The shipped configuration trusting this machine's CAs (the product's certs/ feature). Every name is
    one a FAT stick shows as it is (not 8.3, so a long name is stored): the same configuration on ext4 and
    FAT is the same hub image and the same files."""
    shutil.copytree(REPO / "custom", custom)
    (custom / "home_default" / "README.md").rename(custom / "home_default" / "read-me-first.md")
    if PROXY_CA.exists():
        (custom / "certs").mkdir(exist_ok=True)
        shutil.copy(PROXY_CA, custom / "certs" / CA_NAME)
    return custom


def teacher_tree(root: Path) -> Path:
    """The teacher's good stick: the classroom configuration with one more student and a lesson.
    Hostile sticks start from a copy of it."""
    shutil.rmtree(root, ignore_errors=True)
    custom = classroom_custom(root / "conjuring" / "custom")
    with open(custom / "users.csv", "a") as users:
        users.write(f"{STUDENT[0]},{STUDENT[1]},\n")
    (custom / "shared" / LESSON).write_text("Lesson 1: variables\n")
    # the whole configuration: it replaces what a hostile stick added, rather than being merged onto it
    (custom / "COMPLETE").write_text("")
    return root


def set_toml(custom: Path, text: str) -> None:
    (custom / "conjuring.toml").write_text(text)


@dataclass
class Plugged:
    device: str
    image: Path
    report: str


class Box:
    """One classroom box: the daemon, its hub container, and a loop-device port for sticks."""

    def __init__(self, root: Path, machine_toml: str):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        (root / "box").mkdir()
        self.daemon = Daemon(root / "box", args=["--hub", "docker", "--network", "none", "--usb", "udev"])
        self.daemon.config_dir.mkdir(parents=True)
        self.machine_toml = machine_toml
        self.write_machine_toml(machine_toml)
        self.loops = Loops()
        self.images = root / "sticks"
        self.images.mkdir()

    @property
    def home(self) -> Path:
        return self.daemon.state_dir / "home"

    def write_machine_toml(self, text: str) -> None:
        path = self.daemon.config_dir / "conjuring.toml"
        tmp = path.with_name(".conjuring.toml.new")
        tmp.write_text(text)
        os.replace(tmp, path)

    def start(self) -> None:
        remove_hub()
        classroom_custom(self.daemon.custom)
        self.daemon.start()
        self.daemon.wait_event("ready", timeout=60)

    def close(self) -> None:
        try:
            self.daemon.close()
        finally:
            self.loops.close()
            remove_hub()

    # --- sticks --------------------------------------------------------------------------

    def image(self, name: str, tree: Path, fat: bool = False, size_mb: int = 32) -> Path:
        path = self.images / f"usb-{name}.img"
        if fat:
            return make_fat_stick(path, tree, label=name.upper()[:11], size_mb=size_mb, upper=False)
        return make_ext4_stick(path, tree, label=name[:16], size_mb=size_mb)

    def plug(self, image: Path, timeout: float = 120) -> Plugged:
        """Attach `image`, wait until the daemon has written its report on it, detach, read the report."""
        before = len(self.daemon.events("report_written"))
        device = self.loops.attach(image)
        try:
            self.daemon.wait_event("report_written", count=before + 1, timeout=timeout)
            written = self.daemon.events("report_written")[before:]
            assert [e["device"] for e in written] == [device], written
        finally:
            self.loops.detach(device)
        return Plugged(device, image, read_report(image))

    # --- what the box does ----------------------------------------------------------------

    def active(self) -> str:
        return self.daemon.state().get("active", "")

    def wait_serving(self, config_hash: str | None = None, timeout: float = 600) -> dict:
        def ok(status: dict) -> bool:
            mine = config_hash is None or status.get("active_config") == config_hash
            return mine and str(status.get("phase", "")).startswith("serving")
        return self.daemon.wait_status(ok, timeout=timeout)

    def container(self) -> dict:
        out = subprocess.run([DOCKER, "inspect", HUB], capture_output=True, text=True)
        assert out.returncode == 0, f"no hub container: {out.stderr}"
        return json.loads(out.stdout)[0]

    def mounts(self) -> dict[str, tuple[str, bool]]:
        """The hub container's mounts: destination -> (host source, read-write)."""
        return {m["Destination"]: (m["Source"], m["RW"]) for m in self.container()["Mounts"]}

    def ctl_status(self) -> dict:
        started = time.monotonic()
        done = self.daemon.ctl("status", "--json")
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 30, "conjuringctl status took more than 30 s"
        return json.loads(done.stdout)

    def snapshot(self) -> "Served":
        container = self.container()
        return Served(self.active(), container["Id"], self.mounts(), container["State"]["StartedAt"])

    def serving(self, before: "Served", *, same_config: bool = True, same_container: bool = True) -> "Served":
        """The box still serves what it served before: the daemon answers, a student logs in."""
        assert self.daemon.proc.poll() is None, self.daemon.log_path.read_text()[-3000:]
        status = self.ctl_status()
        now = self.wait_serving(timeout=300)
        served = self.snapshot()
        if same_config:
            assert served.config == before.config, f"active configuration changed: {before.config[:12]} -> {served.config[:12]}"
        if same_container:
            assert served.container == before.container, "the hub container was replaced"
        assert served.mounts == before.mounts, f"the hub's mounts changed:\n{before.mounts}\n{served.mounts}"
        assert status.get("active_config") == now.get("active_config")
        self.student_logs_in()
        return served

    def student_logs_in(self, timeout: float = 90) -> None:
        """A student logs in (a hub that was just started may take a few seconds to listen)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                login(*STUDENT, base=BASE)
                return
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def secrets(self) -> list[bytes]:
        """What must never leave the box: the host's account files, the box's tokens and keys, a student's homework."""
        found = [HOME_MARKER]
        for name in ("/etc/shadow", "/etc/passwd", "/etc/hostname", "/etc/machine-id"):
            first = Path(name).read_bytes().split(b"\n")[0].strip()
            if len(first) >= 8:
                found.append(first)
        for path in sorted(self.daemon.state_dir.joinpath("secrets").rglob("*")):
            if path.is_file() and path.suffix != ".json":
                value = path.read_bytes().strip()
                if len(value) >= 16:
                    found.append(value[:48])
        return found

    def leaked(self, image: Path, *, homes_allowed: bool = False) -> list[str]:
        """Every secret of the box found on the stick image: in its raw blocks, or in a file or archive on it."""
        secrets = [s for s in self.secrets() if not (homes_allowed and s == HOME_MARKER)]
        raw = image.read_bytes()
        found = [f"raw image holds {s[:20]!r}" for s in secrets if s in raw]
        for path, data in stick_files(image, self.root / "readback").items():
            for blob in [data, *archive_members(data)]:
                found += [f"{path} holds {s[:20]!r}" for s in secrets if s in blob]
        return found

    def plant_old_home(self) -> Path:
        """A home on the box: the former student's homework, which a hostile stick wants."""
        home = self.home / "olduser"
        home.mkdir(parents=True, exist_ok=True)
        (home / "homework.txt").write_bytes(HOME_MARKER + b"\n")
        return home


@dataclass(frozen=True)
class Served:
    config: str
    container: str
    mounts: dict
    started: str


def remove_hub() -> None:
    subprocess.run([DOCKER, "rm", "-f", HUB, f"{HUB}-previous"], capture_output=True)


def is_fat(image: Path) -> bool:
    return subprocess.run(["minfo", "-i", str(image), "::"], capture_output=True, env=MTOOLS_ENV).returncode == 0


def read_report(image: Path) -> str:
    if is_fat(image):
        return fat_read(image, "conjuring/REPORT.txt").decode(errors="replace")
    return ext4_read(image, "/conjuring/REPORT.txt").decode(errors="replace")


def stick_files(image: Path, scratch: Path) -> dict[str, bytes]:
    """Every regular file on the stick image, read back with debugfs (ext4) or mtools (FAT)."""
    remove_tree(scratch)
    scratch.mkdir(parents=True)
    if is_fat(image):
        subprocess.run(["mcopy", "-s", "-n", "-i", str(image), "::*", str(scratch)], capture_output=True, env=MTOOLS_ENV)
    else:
        subprocess.run(["debugfs", "-R", f"rdump / {scratch}", str(image)], capture_output=True)
    files = {}
    listed = subprocess.run(["find", str(scratch), "-type", "f", "-print0"], capture_output=True, check=True).stdout
    for name in filter(None, listed.split(b"\0")):  # os.walk recurses too: find walks the deep tree
        path = Path(os.fsdecode(name))
        files[path.relative_to(scratch).as_posix()] = b"" if _all_zeros(path) else path.read_bytes()
    remove_tree(scratch)
    return files


def _all_zeros(path: Path, big: int = 64 << 20, chunk: int = 8 << 20) -> bool:
    """A large file of nothing but zero bytes (a sparse file read back): no secret in it, and
    not worth holding in memory and searching, 2 GiB at a time, for every secret."""
    if path.stat().st_size < big:
        return False
    zeros = bytes(chunk)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            if block != zeros[:len(block)]:
                return False
    return True


def remove_tree(path: Path) -> None:
    """rm -rf: a hostile stick's 1000-deep tree is too deep for shutil.rmtree, which recurses."""
    subprocess.run(["rm", "-rf", str(path)], check=True)


def archive_members(data: bytes) -> list[bytes]:
    """The contents of the files in `data` if it is a tar archive (the backup's format on FAT)."""
    import io

    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, EOFError, OSError):
        return []


def deep_tree(top: Path, depth: int) -> None:
    """`top/d/d/d/...` `depth` folders deep, with a file at the bottom."""
    path = top
    for _ in range(depth):  # one level at a time: Path.mkdir(parents=True) recurses once per level
        path = path / "d"
        path.mkdir()
    (path / "bottom.txt").write_text("the bottom\n")


def entry_count(image: Path) -> int:
    """How many inodes the ext4 image uses (to make sure the stick really carries the hostile tree)."""
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Inode count"]) - int(fields["Free inodes"])
