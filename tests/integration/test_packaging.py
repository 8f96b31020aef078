"""Packaging against the real tools: udevadm test of the rules, dpkg-buildpackage, lintian."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.debbuild import CLEAN_PATH, TOP, Unbuildable, build_deb, require_or_skip

RULES = TOP / "udev" / "70-conjuring.rules"
SYSTEM_RULES = Path("/usr/lib/udev/rules.d")
# Stand-in for the USB identity of a real stick (loop devices have none).
TEST_USB_RULE = ('SUBSYSTEM=="block", KERNEL=="loop*", ATTR{loop/backing_file}=="*/usb-*.img", '
                 'ENV{ID_BUS}="usb"\n')


# ------------------------------------------------------------------ udev rules

@pytest.fixture(scope="module")
def udev_tools():
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (udevadm test on loop devices needs root)")
    for tool in ("udevadm", "losetup", "unshare", "mkfs.ext4", "mkfs.vfat"):
        if shutil.which(tool, path=CLEAN_PATH) is None:
            problems.append(f"{tool} missing")
    if not (SYSTEM_RULES / "60-persistent-storage.rules").exists():
        problems.append("udev's 60-persistent-storage.rules missing (apt-get install udev)")
    if problems:
        require_or_skip(Exception("; ".join(problems)))


def make_image(folder: Path, name: str, fs: str | None) -> Path:
    image = folder / name
    if fs == "ext4":
        src = folder / f"{name}.src"
        (src / "conjuring" / "custom").mkdir(parents=True)
        subprocess.run(["mkfs.ext4", "-q", "-L", "CONJURING", "-d", str(src), str(image), "8M"], check=True)
    else:
        with open(image, "wb") as handle:
            handle.truncate(8 * 1024 * 1024)
        if fs == "vfat":
            subprocess.run(["mkfs.vfat", "-n", "CONJURING", str(image)], check=True, capture_output=True)
    return image


def udevadm_test(tmp_path: Path, image: Path, headless: bool = False) -> dict[str, str]:
    """Properties of the loop device for `image` after our rules, in a private mount namespace.

    udevadm test writes device links and its database: /dev and /run are
    private tmpfs copies there, so the machine's udev state is untouched.
    """
    rules, empty = tmp_path / "rules", tmp_path / "empty"
    rules.mkdir(exist_ok=True)
    empty.mkdir(exist_ok=True)
    shutil.copy(SYSTEM_RULES / "60-persistent-storage.rules", rules)
    (rules / "65-test-usb.rules").write_text(TEST_USB_RULE)
    marker = tmp_path / "headless"
    (rules / RULES.name).write_text(RULES.read_text().replace("/etc/conjuring/headless", str(marker)))
    if headless:
        marker.touch()
    else:
        marker.unlink(missing_ok=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True,
                          text=True).stdout.strip()
    name = Path(loop).name
    script = (f"mount --bind {rules} /usr/lib/udev/rules.d && "
              f"{{ [ ! -d /etc/udev/rules.d ] || mount --bind {empty} /etc/udev/rules.d; }} && "
              f"mount -t tmpfs none /run && mount -t tmpfs none /dev && "
              f"mknod /dev/{name} b 7 {name.removeprefix('loop')} && "
              f"exec udevadm test --action=add /sys/class/block/{name}")
    try:
        result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                capture_output=True, text=True, env={**os.environ, "PATH": CLEAN_PATH})
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert RULES.name in result.stderr, "our rules file was not read"
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@pytest.mark.udev
def test_usb_stick_with_filesystem_is_tagged(udev_tools, tmp_path):
    props = udevadm_test(tmp_path, make_image(tmp_path, "usb-stick.img", "ext4"))
    assert props.get("ID_BUS") == "usb" and props.get("ID_FS_USAGE") == "filesystem"
    assert props.get("CONJURING_CANDIDATE") == "1"
    assert ":conjuring:" in props.get("TAGS", "")
    assert "UDISKS_IGNORE" not in props and "UDISKS_AUTO" not in props  # desktop keeps automount


@pytest.mark.udev
def test_fat_stick_is_tagged(udev_tools, tmp_path):
    props = udevadm_test(tmp_path, make_image(tmp_path, "usb-fat.img", "vfat"))
    assert props.get("ID_FS_TYPE") == "vfat"
    assert props.get("CONJURING_CANDIDATE") == "1"


@pytest.mark.udev
def test_headless_box_hides_candidates_from_udisks(udev_tools, tmp_path):
    props = udevadm_test(tmp_path, make_image(tmp_path, "usb-stick.img", "ext4"), headless=True)
    assert props.get("CONJURING_CANDIDATE") == "1"
    assert props.get("UDISKS_IGNORE") == "1" and props.get("UDISKS_AUTO") == "0"


@pytest.mark.udev
def test_internal_disk_is_not_a_candidate(udev_tools, tmp_path):
    props = udevadm_test(tmp_path, make_image(tmp_path, "internal.img", "ext4"), headless=True)
    assert props.get("ID_FS_USAGE") == "filesystem" and "ID_BUS" not in props
    assert "CONJURING_CANDIDATE" not in props
    assert ":conjuring:" not in props.get("TAGS", "")
    assert "UDISKS_IGNORE" not in props


@pytest.mark.udev
def test_usb_disk_without_filesystem_is_not_a_candidate(udev_tools, tmp_path):
    props = udevadm_test(tmp_path, make_image(tmp_path, "usb-blank.img", None))
    assert props.get("ID_BUS") == "usb" and "ID_FS_USAGE" not in props
    assert "CONJURING_CANDIDATE" not in props


def test_rules_run_no_programs():
    keys = set()
    for line in RULES.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keys |= {m.group(1) + (m.group(2) or "") for m in re.finditer(r"([A-Z_]+)(\{[^}]*\})?\s*[!+:-]?=", line)}
    assert keys, "no rules parsed"
    assert "TAG" in keys and "ENV{CONJURING_CANDIDATE}" in keys
    assert not {k for k in keys if k.startswith(("RUN", "PROGRAM", "IMPORT{program}"))}


# ------------------------------------------------------------------ the .deb

@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    try:
        path, seconds = build_deb(tmp_path_factory.mktemp("deb"))
    except Unbuildable as exc:
        require_or_skip(exc)
    print(f"\nbuild-deb.sh: {seconds:.1f}s")
    return path


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


def test_build_leaves_the_work_tree_clean(deb):
    assert not (TOP / "debian").exists()
    assert not (TOP / ".pybuild").exists()


def test_deb_name_and_fields(deb):
    version = subprocess.run(["dpkg-parsechangelog", "-l", str(TOP / "packaging/debian/changelog"), "-S",
                              "Version"], check=True, capture_output=True, text=True).stdout.strip()
    assert deb.name == f"conjuringd_{version}_all.deb"
    fields = dpkg_deb("-f", str(deb), "Package", "Architecture", "Depends", "Recommends")
    assert "Architecture: all" in fields
    for dep in ("python3-pyudev", "python3-dbus-next", "python3-docker", "python3-watchdog",
                "python3-structlog", "python3-sdnotify", "python3-segno", "python3-yaml", "docker.io | docker-ce"):
        assert dep in fields, dep
    assert "Recommends: network-manager" in fields
    assert "avahi-daemon" in fields.split("Recommends:", 1)[1]  # publishes conjuring.local (mDNS)


def test_deb_contents(deb):
    listing = dpkg_deb("-c", str(deb))
    for path in ("./lib/systemd/system/conjuringd.service", "./lib/udev/rules.d/70-conjuring.rules",
                 "./etc/conjuring/conjuring.toml", "./usr/share/conjuring/custom/users.csv",
                 "./usr/share/conjuring/custom/conjuring.toml", "./usr/bin/conjuringd", "./usr/bin/conjuringctl",
                 "./usr/share/man/man8/conjuringd.8.gz", "./usr/share/man/man8/conjuringctl.8.gz",
                 "./usr/lib/python3/dist-packages/conjuringd/daemon.py"):
        assert path in listing, path


def test_conffile_is_the_commented_default(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "control")], check=True)
    assert (tmp_path / "control" / "conffiles").read_text().split() == ["/etc/conjuring/conjuring.toml"]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "root")], check=True)
    shipped = (tmp_path / "root/etc/conjuring/conjuring.toml").read_text()
    assert shipped == (TOP / "custom" / "conjuring.toml").read_text()
    assert all(not line.strip() or line.lstrip().startswith("#") for line in shipped.splitlines())


def test_maintainer_scripts(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True)
    postinst = (tmp_path / "postinst").read_text()
    assert "addgroup --system" in postinst and "conjuring" in postinst
    assert "deb-systemd-invoke" in postinst  # dh_installsystemd starts/restarts the unit
    postrm = (tmp_path / "postrm").read_text()
    assert "! -name home ! -name uids.json" in postrm and "never deleted" in postrm
    assert "dnsmasq-shared.d/conjuringd-captive-portal.conf" in postrm and "# conjuringd captive portal:" in postrm


def test_installed_unit_verifies(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    unit = (tmp_path / "lib/systemd/system/conjuringd.service").read_text()
    # systemd-analyze checks that ExecStart exists: point it into the extracted tree.
    unit = unit.replace("ExecStart=/usr/bin/conjuringd", f"ExecStart={tmp_path}/usr/bin/conjuringd")
    copy = tmp_path / "conjuringd.service"
    copy.write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_lintian_has_no_errors_or_warnings(deb):
    result = subprocess.run(["lintian", "--fail-on", "error,warning", "--tag-display-limit", "0", str(deb)],
                            capture_output=True, text=True, env={**os.environ, "PATH": CLEAN_PATH})
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith(("E:", "W:"))]


# ------------------------------------------------------------------ man pages

def man_text(name: str) -> str:
    """The page's roff source with the escapes of '-' removed (\\- -> -)."""
    return (TOP / "packaging" / "man" / name).read_text().replace("\\-", "-")


def help_options(module: str, *args: str) -> set[str]:
    result = subprocess.run([sys.executable, "-m", module, *args, "--help"], capture_output=True, text=True,
                            cwd=TOP)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", result.stdout)) - {"--help"}


def test_conjuringd_man_page_covers_every_option():
    options = help_options("conjuringd.daemon")
    assert {"--state-dir", "--hub", "--log-format"} <= options
    page = man_text("conjuringd.8")
    assert not {option for option in options if option not in page}
    choices = re.search(r"--log-format \{([^}]*)\}", subprocess.run(
        [sys.executable, "-m", "conjuringd.daemon", "--help"], capture_output=True, text=True, cwd=TOP).stdout)
    assert choices and all(choice in page for choice in choices.group(1).split(","))


def test_conjuringctl_man_page_covers_every_command_and_option():
    from conjuringd.ctl import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    page = man_text("conjuringctl.8")
    assert {"status", "validate", "apply"} <= set(commands)
    assert not {name for name in commands if f".B {name}" not in page and f".BI {name}" not in page
                and f".BR {name}" not in page}
    options = help_options("conjuringd.ctl") | {o for name in commands for o in help_options("conjuringd.ctl", name)}
    assert not {option for option in options if option not in page}
