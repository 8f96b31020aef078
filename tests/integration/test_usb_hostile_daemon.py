"""Hostile sticks against a whole classroom box, written as the student who makes them.

One box for the module: the real conjuringd (--hub docker --network none --usb udev), the real
systemd-udevd and loop devices, the real dockerd. The teacher's stick is applied first and the hub
serves; then each hostile stick, built at run time on ext4 or FAT, is plugged in turn. After each:
the stick's REPORT.txt names the problem, the previous configuration keeps serving (same active
configuration or only its safe part, same hub container and mounts, a student logs in), the daemon
answers `conjuringctl status`, and nothing of the box is on the stick (read back block by block and
file by file). The content scenarios run with `[usb] trust = "any"` (every stick is parsed: the worst
case); at the end the box goes back to the default trust and the same sticks are refused as not enrolled.

Scenario -> test (issue 11):
- home_dir = "/" + srv/jupyterhub_config.py ........ test_home_dir_root_and_hub_code_get_no_host_root
- home_dir = "/etc" or the secrets folder + backup .. test_home_dir_pointing_at_host_files_backs_up_only_homes
- empty custom/ + home_backup ....................... test_empty_custom_with_backup_gets_no_homes
- FIFOs .REPORT.txt.tmp, *.conjuring-tmp, MANIFEST .. test_fifos_do_not_wedge_the_stick_worker
- MANIFEST.json holding [] or unknown keys .......... test_crafted_manifest_is_reported
- a tree ~1000 folders deep ......................... test_deep_tree_is_reported_and_the_hub_is_still_repaired
- max_files with 50 folders + 50 symlinks ........... test_max_files_counts_folders_and_symlinks
- sparse 2 GiB file + links + FIFO in shared/ ....... test_sparse_file_links_and_fifo_each_refused_rest_applied
- certificate with a 120-character name ............. test_long_certificate_name_is_a_clear_result
- all of them on a box with the default trust ....... test_default_trust_refuses_hostile_sticks_as_not_enrolled
- stopping promptly after all of it ................. test_daemon_stops_promptly_after_the_attack
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conjuringd.store import config_digest
from tests.support.docker import DOCKER, require_docker
from tests.support.hostile import CA_NAME, HUB, Box, deep_tree, entry_count, remove_tree, set_toml, teacher_tree
from tests.support.udev import loop_toml, udevd

pytestmark = [pytest.mark.docker, pytest.mark.udev, pytest.mark.slow]
__all__ = ["udevd"]

TRUST_ANY = 'trust = "any"\n'  # after loop_toml's [usb] lines: loop devices of this run, every stick trusted


@pytest.fixture(scope="module")
def box(tmp_path_factory, udevd):
    require_docker()
    root = tmp_path_factory.mktemp("hostile")
    box = Box(root, loop_toml(root, TRUST_ANY))
    try:
        box.start()
        box.wait_serving(timeout=1200)
        teacher = box.image("teacher", teacher_tree(box.root / "teacher"))
        plugged = box.plug(teacher, timeout=600)
        assert "APPLIED" in plugged.report, plugged.report
        box.teacher_image, box.teacher_config = teacher, config_digest(box.root / "teacher/conjuring/custom")
        box.wait_serving(box.teacher_config)
        box.plant_old_home()
        yield box
    finally:
        box.close()
        # the 1000-deep trees are too deep for shutil.rmtree (recursive), which pytest uses to clean up
        remove_tree(box.root / "trees")


def back_to_teacher(box: Box) -> None:
    """After a stick whose safe part was applied: the teacher's configuration again, for the next test."""
    if box.active() != box.teacher_config:
        assert "APPLIED" in box.plug(box.teacher_image).report
    box.wait_serving(box.teacher_config)


def hostile(box: Box, name: str) -> Path:
    """A student's stick: a copy of the teacher's (it was left on a desk), to be made hostile."""
    (box.root / "trees").mkdir(exist_ok=True)
    return teacher_tree(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=box.root / "trees")))


def custom_of(tree: Path) -> Path:
    return tree / "conjuring" / "custom"


def result_of(report: str) -> str:
    found = re.search(r"^Result:\s+(\S+)", report, re.M)
    assert found, report
    return found.group(1)


# --- the sticks (each builder is used again on the default-trust box) ----------------------


def stick_home_dir_root(box: Box) -> Path:
    tree = hostile(box, "rootdir")
    custom = custom_of(tree)
    set_toml(custom, '[hub]\nhome_dir = "/"\n')
    with open(custom / "srv" / "jupyterhub_config.py", "a") as f:  # runs as root in the hub container
        f.write('\nimport pathlib\npathlib.Path("/home/HOSTILE-WAS-HERE").write_text("owned")\n'
                'pathlib.Path("/home/etc/HOSTILE-WAS-HERE").write_text("owned")\n')
    return box.image("rootdir", tree)


def stick_home_dir_etc(box: Box) -> Path:
    tree = hostile(box, "etcdir")
    set_toml(custom_of(tree), '[hub]\nhome_dir = "/etc"\n')
    (tree / "conjuring" / "home_backup").mkdir()
    return box.image("etcdir", tree, fat=True)


def stick_home_dir_secrets(box: Box) -> Path:
    tree = hostile(box, "secretsdir")
    set_toml(custom_of(tree), f'[hub]\nhome_dir = "{box.daemon.state_dir / "secrets"}"\n')
    (tree / "conjuring" / "home_backup").mkdir()
    return box.image("secretsdir", tree)


def stick_empty_custom(box: Box) -> Path:
    (box.root / "trees").mkdir(exist_ok=True)
    tree = Path(tempfile.mkdtemp(prefix="empty-", dir=box.root / "trees"))
    (tree / "conjuring" / "custom").mkdir(parents=True)
    (tree / "conjuring" / "home_backup").mkdir()
    return box.image("empty", tree, fat=True)


def stick_fifo_manifest(box: Box) -> Path:
    tree = hostile(box, "fifoman")
    (tree / "conjuring" / "home_backup").mkdir()
    os.mkfifo(tree / "conjuring" / "home_backup" / "MANIFEST.json")
    os.mkfifo(tree / "conjuring" / ".REPORT.txt.tmp")
    return box.image("fifoman", tree)


def stick_fifo_tmp(box: Box) -> Path:
    tree = hostile(box, "fifotmp")
    backup = tree / "conjuring" / "home_backup"
    (backup / "olduser").mkdir(parents=True)
    os.mkfifo(backup / "olduser" / ".homework.txt.conjuring-tmp")  # where the backup writes that file first
    os.mkfifo(backup / "x.conjuring-tmp")
    os.mkfifo(tree / "conjuring" / ".REPORT.txt.tmp")
    return box.image("fifotmp", tree)


def stick_manifest_list(box: Box) -> Path:
    tree = hostile(box, "manlist")
    (tree / "conjuring" / "home_backup").mkdir()
    (tree / "conjuring" / "home_backup" / "MANIFEST.json").write_text("[]\n")
    return box.image("manlist", tree, fat=True)


def stick_manifest_keys(box: Box) -> Path:
    tree = hostile(box, "mankeys")
    (tree / "conjuring" / "home_backup").mkdir()
    (tree / "conjuring" / "home_backup" / "MANIFEST.json").write_text(
        '{"version": 1, "entries": {"olduser/homework.txt": {"kind": "file", "evil": true}}, "owner": 0}\n')
    return box.image("mankeys", tree)


def stick_deep_tree(box: Box) -> Path:
    tree = hostile(box, "deep")
    deep_tree(custom_of(tree) / "shared", 1000)
    return box.image("deep", tree, size_mb=48)


def stick_many_entries(box: Box) -> Path:
    tree = hostile(box, "many")
    shared = custom_of(tree) / "shared"
    for i in range(50):
        (shared / f"folder{i:02d}").mkdir()
        (shared / f"link{i:02d}").symlink_to("welcome.ipynb")
    return box.image("many", tree)


def stick_sparse_and_links(box: Box) -> Path:
    tree = hostile(box, "sparse")
    shared = custom_of(tree) / "shared"
    with open(shared / "huge.bin", "wb") as f:
        f.truncate(2 * 2**30)  # exactly the default max_bytes, almost no blocks on the stick
    (shared / "shadow").symlink_to("/etc/shadow")
    (shared / "etc").symlink_to("/etc")
    os.mkfifo(shared / "pipe")
    (shared / "lesson-two.txt").write_text("Lesson 2: loops\n")  # the safe part
    return box.image("sparse", tree, size_mb=64)


LONG_CERT = "c" * 116 + ".crt"  # 120 characters


def stick_long_cert(box: Box) -> Path:
    tree = hostile(box, "longcert")
    certs = custom_of(tree) / "certs"
    certs.mkdir(exist_ok=True)
    shutil.copy(certs / CA_NAME if (certs / CA_NAME).exists() else "/etc/ssl/certs/ca-certificates.crt", certs / LONG_CERT)
    return box.image("longcert", tree)


# --- trust = "any": every stick is parsed ----------------------------------------------------


def test_empty_custom_with_backup_gets_no_homes(box):
    before = box.snapshot()
    image = stick_empty_custom(box)
    report = box.plug(image).report
    assert result_of(report) in ("INVALID", "FAILED"), report
    assert re.search(r"backup NOT written", report), report
    box.serving(before)
    assert box.leaked(image) == []


@pytest.mark.parametrize("builder", [stick_home_dir_etc, stick_home_dir_secrets], ids=["etc-fat", "secrets-ext4"])
def test_home_dir_pointing_at_host_files_backs_up_only_homes(box, builder):
    before = box.snapshot()
    image = builder(box)
    report = box.plug(image).report
    assert re.search(r"conjuring\.toml.*warning.*home_dir", report), report
    assert "backup written" in report, report  # trust = "any": a stick may take the homes, but only the homes
    box.serving(before, same_config=False)
    assert box.mounts()["/home"][0] == str(box.home)
    assert box.leaked(image, homes_allowed=True) == []
    assert box.leaked(image) != [], "the backup came from the students' homes"
    back_to_teacher(box)


@pytest.mark.parametrize("builder", [stick_fifo_manifest, stick_fifo_tmp], ids=["manifest", "tmp-files"])
def test_fifos_do_not_wedge_the_stick_worker(box, builder):
    before = box.snapshot()
    image = builder(box)
    started = time.monotonic()
    report = box.plug(image, timeout=180).report
    assert result_of(report) == "UNCHANGED", report
    if builder is stick_fifo_manifest:
        assert re.search(r"backup NOT written.*MANIFEST\.json", report), report
        assert box.leaked(image) == []
    else:
        assert "Home backup" in report, report
        assert box.leaked(image, homes_allowed=True) == []
    # the worker is free: the next stick is handled at once
    assert "UNCHANGED" in box.plug(box.teacher_image, timeout=60).report
    assert time.monotonic() - started < 240
    box.serving(before)


@pytest.mark.parametrize("builder", [stick_manifest_list, stick_manifest_keys], ids=["list-fat", "keys-ext4"])
def test_crafted_manifest_is_reported(box, builder):
    before = box.snapshot()
    image = builder(box)
    report = box.plug(image).report
    assert re.search(r"backup NOT written.*MANIFEST\.json", report), report
    assert "Traceback" not in report
    box.serving(before)
    assert box.leaked(image) == []


def test_deep_tree_is_reported_and_the_hub_is_still_repaired(box):
    before = box.snapshot()
    image = stick_deep_tree(box)
    assert entry_count(image) > 1000
    report = box.plug(image, timeout=180).report
    assert re.search(r"shared/d/d.*(deep|depth|level)", report, re.I), report
    box.serving(before, same_config=False)
    configs = box.daemon.state_dir / "configs"
    deepest = max(len(Path(d).relative_to(configs).parts) for d, _, _ in os.walk(configs))
    assert deepest < 100, f"{deepest} levels were imported"
    # the reconciler still looks after the hub: stop it behind the daemon's back, poke the daemon
    subprocess.run([DOCKER, "stop", "-t", "5", HUB], check=True, capture_output=True)
    box.daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 120
    while not box.container()["State"]["Running"]:
        assert time.monotonic() < deadline, box.daemon.log_path.read_text()[-3000:]
        time.sleep(0.5)
    box.serving(before, same_config=False)
    assert not [e for e in box.daemon.events("unexpected_error")]
    back_to_teacher(box)


def test_max_files_counts_folders_and_symlinks(box):
    box.write_machine_toml(loop_toml(box.root, TRUST_ANY + "max_files = 10\n"))
    try:
        before = box.snapshot()
        image = stick_many_entries(box)
        report = box.plug(image).report
        assert result_of(report) == "INVALID", report
        assert re.search(r"(more than|over).*\b10\b|max_files", report), report
        box.serving(before)
    finally:
        box.write_machine_toml(loop_toml(box.root, TRUST_ANY))


def test_sparse_file_links_and_fifo_each_refused_rest_applied(box):
    before = box.snapshot()
    image = stick_sparse_and_links(box)
    report = box.plug(image, timeout=180).report
    assert result_of(report) == "APPLIED", report
    for name in ("huge.bin", "shadow", "etc", "pipe"):
        assert re.search(rf"shared/{name}\b", report), f"{name} not named:\n{report}"
    box.serving(before, same_config=False)  # the safe part is applied: shared/ changes live, same hub
    snapshot = box.daemon.state_dir / "configs" / box.active() / "shared"
    assert sorted(os.listdir(snapshot)) == ["lesson-one.txt", "lesson-two.txt", "welcome.ipynb"]
    assert box.leaked(image) == []
    shadow = Path("/etc/shadow").read_bytes().split(b"\n")[0]
    for path in box.daemon.state_dir.joinpath("configs").rglob("*"):
        assert not path.is_symlink(), path
        if path.is_file():
            assert shadow not in path.read_bytes(), path
    back_to_teacher(box)


def test_long_certificate_name_is_a_clear_result(box):
    """The name once broke the build context (a USTAR tar), and the build was retried for ever without a report."""
    before = box.snapshot()
    image = stick_long_cert(box)
    since = len(box.daemon.events())
    report = box.plug(image, timeout=900).report  # a new certificate: the image is rebuilt (cached after the first run)
    assert result_of(report) == "APPLIED", report
    box.serving(before, same_config=False, same_container=False)
    installed = subprocess.run([DOCKER, "exec", HUB, "ls", "/usr/local/share/ca-certificates/conjuring/"],
                               capture_output=True, text=True)
    assert LONG_CERT in installed.stdout.split(), installed
    time.sleep(5)  # and nothing is tried again
    events = box.daemon.events()[since:]
    builds = [e for e in events if e.get("event") == "action" and "build" in e.get("action", "")]
    assert len(builds) <= 1 and not [e for e in events if e.get("event") in ("build_failed", "unexpected_error")], builds
    back_to_teacher(box)


def test_home_dir_root_and_hub_code_get_no_host_root(box):
    before = box.snapshot()
    image = stick_home_dir_root(box)
    report = box.plug(image, timeout=600).report
    assert re.search(r"conjuring\.toml.*warning.*home_dir", report), report
    box.wait_serving(config_digest(next((box.root / "trees").glob("rootdir-*")) / "conjuring" / "custom"))
    # the stick's hub code ran (srv/ is the teacher's to set), but inside the container, on the homes folder
    served = box.serving(before, same_config=False, same_container=False)
    assert served.mounts["/home"] == (str(box.home), True)
    assert (box.home / "HOSTILE-WAS-HERE").exists(), "the stick's hub code did not run: the test proves nothing"
    assert not Path("/HOSTILE-WAS-HERE").exists() and not Path("/etc/HOSTILE-WAS-HERE").exists()
    assert box.leaked(image) == []


# --- the default trust: the same sticks are refused as not enrolled ------------------------------


ALL_STICKS = [stick_home_dir_root, stick_home_dir_etc, stick_home_dir_secrets, stick_empty_custom, stick_fifo_manifest,
              stick_fifo_tmp, stick_manifest_list, stick_manifest_keys, stick_deep_tree, stick_many_entries,
              stick_sparse_and_links, stick_long_cert]


def test_default_trust_enrols_the_teacher_stick_first(box):
    box.write_machine_toml(loop_toml(box.root))
    (box.home / "HOSTILE-WAS-HERE").unlink(missing_ok=True)
    report = box.plug(box.teacher_image, timeout=600).report
    assert result_of(report) in ("APPLIED", "UNCHANGED"), report
    box.wait_serving(box.teacher_config)
    listed = box.daemon.ctl("sticks")
    assert listed.returncode == 0 and "teacher" in listed.stdout, listed


def forged_key(box: Box) -> Path:
    """A student's own stick with a made-up credential where an enrolled stick keeps its key."""
    tree = hostile(box, "forged")
    (tree / "conjuring" / "stick.key").write_bytes(secrets.token_bytes(64))
    (tree / "conjuring" / "home_backup").mkdir()
    with open(custom_of(tree) / "users.csv", "a") as users:
        users.write("intruder,intruder-pw-1,yes\n")
    return box.image("forged", tree)


@pytest.mark.parametrize("builder", [*ALL_STICKS, forged_key], ids=lambda b: b.__name__.removeprefix("stick_"))
def test_default_trust_refuses_hostile_sticks_as_not_enrolled(box, builder):
    before = box.snapshot()
    configs = sorted(os.listdir(box.daemon.state_dir / "configs"))
    image = builder(box)
    report = box.plug(image, timeout=120).report
    assert "not enrolled" in report, report
    assert "http://" not in report and "Users:" not in report and "backup written" not in report, report
    box.serving(before)
    assert sorted(os.listdir(box.daemon.state_dir / "configs")) == configs, "something was imported"
    assert not (box.home / "HOSTILE-WAS-HERE").exists()
    assert box.leaked(image) == []


def test_daemon_stops_promptly_after_the_attack(box):
    started = time.monotonic()
    assert box.daemon.stop(timeout=30) == 0
    assert time.monotonic() - started < 20
