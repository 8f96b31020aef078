"""`conjuringctl migrate` on a folder laid out like an original Conjuring installation: its
checkout with custom/ (configuration) and custom/home/ (the homes its docker-compose.yml mounts
at /home, owned by the UIDs useradd -K UID_MIN=2000 gave in users.csv order)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conjuringd.migrate import MigrateError, migrate
from conjuringd.paths import Paths
from conjuringd.uids import UidMap

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be set as root")

USERS = "username,password,admin\nana,ana-pw-1234,\nben,ben-pw-1234,\nteacher,teach-pw-1234,yes\n"
ORIGINAL = {"ana": 2000, "ben": 2001, "teacher": 2002, "gone": 2003}  # gone: removed from users.csv since


def original_installation(root: Path) -> Path:
    custom = root / "custom"
    for rel, text in {"users.csv": USERS, "requirements.txt": "numpy\n", "apt.txt": "git\n",
                      "shared/week1/intro.txt": "week 1\n", "home_default/README.md": "welcome\n",
                      "srv/jupyterhub_config.py": "c.Spawner.default_url = '/lab'\n"}.items():
        (custom / rel).parent.mkdir(parents=True, exist_ok=True)
        (custom / rel).write_text(text)
    (root / "docker-compose.yml").write_text("services: {}\n")
    (root / "docker-compose.override.yml").write_text("services: {conjuring: {shm_size: 8gb}}\n")
    for name, uid in ORIGINAL.items():
        home = custom / "home" / name
        (home / "work").mkdir(parents=True)
        (home / "work" / "mine.txt").write_text(f"{name}'s work\n")
        (home / "shared").symlink_to("/shared")
        for path in (home, home / "work", home / "work" / "mine.txt", home / "shared"):
            os.lchown(path, uid, 1000)  # group: the original's "conjuring"
    os.mkfifo(custom / "home" / "ana" / "pipe")
    (custom / "home" / "Not A User").mkdir()
    (custom / "home" / "lost+found").mkdir()
    (custom / "home" / "stray.txt").write_text("x")
    return root


def fingerprint(root: Path) -> dict:
    """Everything about a tree that a write could change: names, kinds, bytes, owners, modes, mtimes."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted([*dirs, *files]):
            path = Path(dirpath) / name
            st = os.lstat(path)
            what = (os.readlink(path) if path.is_symlink() else
                    hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else "")
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size, what)
    return out


@pytest.fixture
def box(tmp_path):
    paths = Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")
    (paths.local_custom / "shared").mkdir(parents=True)
    (paths.local_custom / "users.csv").write_text("username,password\nold,old-pw-1234\n")
    UidMap(paths.state_dir / "uids.json").assign(["ben"])  # this box met ben first: he is 2000 here
    return paths


def test_migrate_imports_the_configuration_and_each_home_with_this_boxs_uids(tmp_path, box):
    source = original_installation(tmp_path / "conjuring")
    before = fingerprint(source)
    report = migrate(source, box, box.home)
    assert fingerprint(source) == before, "the original installation is only read"
    uids = UidMap(box.state_dir / "uids.json").known()
    assert uids == {"ben": 2000, "ana": 2001, "teacher": 2002, "gone": 2003}
    assert report.uid_map == {"ana": (2000, 2001), "ben": (2001, 2000), "teacher": (2002, 2002), "gone": (2003, 2003)}
    assert report.not_listed == ["gone"]
    assert report.skipped_homes == ["Not A User: not a user name", "lost+found: not a user name", "stray.txt: not a folder"]
    assert sorted(os.listdir(box.home)) == ["ana", "ben", "gone", "teacher"]
    for name, uid in uids.items():
        home = box.home / name
        assert (home / "work" / "mine.txt").read_text() == f"{name}'s work\n"
        assert os.readlink(home / "shared") == "/shared"
        for path in (home, home / "work", home / "work" / "mine.txt", home / "shared"):
            assert (os.lstat(path).st_uid, os.lstat(path).st_gid) == (uid, uid), path
        assert os.stat(home).st_mode & 0o777 == 0o750
    assert report.restore.problems == ("ana/pipe: not a file, folder or symlink (device, FIFO or socket): refused",)
    local = box.local_custom
    assert sorted(p.name for p in local.iterdir()) == ["apt.txt", "home_default", "requirements.txt", "shared", "srv", "users.csv"]
    assert (local / "users.csv").read_text() == USERS and (local / "users.csv").stat().st_mode & 0o777 == 0o600
    assert (local / "shared" / "week1" / "intro.txt").read_text() == "week 1\n"
    assert (report.config_kept_aside / "users.csv").read_text().startswith("username,password\nold")
    assert any("docker-compose.override.yml: not imported" in n for n in report.notes)


def test_a_second_migrate_finds_everything_identical_and_keeps_what_students_wrote_since(tmp_path, box):
    source = original_installation(tmp_path / "conjuring")
    migrate(source, box, box.home)
    (box.home / "ana" / "work" / "mine.txt").write_text("ana's work, edited on the new box\n")
    report = migrate(source, box, box.home)
    assert report.config_kept_aside is None and "already holds this configuration" in report.notes[0]
    assert report.restore.restored == () and report.restore.kept_newer == ("ana/work/mine.txt",)
    assert (box.home / "ana" / "work" / "mine.txt").read_text() == "ana's work, edited on the new box\n"


def test_an_invalid_installation_changes_nothing(tmp_path, box):
    source = original_installation(tmp_path / "conjuring")
    (source / "custom" / "users.csv").write_text("username,password\nana,\nana,x\n")
    with pytest.raises(MigrateError, match="does not validate") as caught:
        migrate(source, box, box.home)
    assert any("users.csv" in p for p in caught.value.problems)
    assert (box.local_custom / "users.csv").read_text().startswith("username,password\nold")
    assert not box.home.exists() and UidMap(box.state_dir / "uids.json").known() == {"ben": 2000}
    assert sorted(p.name for p in box.config_dir.iterdir()) == ["custom"], "no staging copy is left behind"


def test_a_folder_that_is_no_installation_is_refused(tmp_path, box):
    with pytest.raises(MigrateError, match="not an installation of Conjuring"):
        migrate(tmp_path, box, box.home)


def test_conjuringctl_migrate_reports_what_it_imported_and_skipped(tmp_path, box):
    source = original_installation(tmp_path / "conjuring")
    done = subprocess.run([sys.executable, "-m", "conjuringd.ctl", "--state-dir", str(box.state_dir), "--config-dir",
                           str(box.config_dir), "--runtime-dir", str(box.runtime_dir), "migrate", str(source / "custom")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done  # one file was skipped, and the exit code says so
    out = done.stdout
    assert f"configuration: custom/ imported into {box.local_custom}" in out
    assert "home ana: UID 2000 -> 2001" in out and "home ben: UID 2001 -> 2000" in out
    assert "home gone: UID 2003 -> 2003 (not in users.csv: imported, cannot log in until listed)" in out
    assert "files: imported 8, identical 0, kept newer 0, skipped 1" in out
    assert "skipped: ana/pipe: not a file, folder or symlink" in out
    assert json.loads((box.state_dir / "uids.json").read_text())["users"]["teacher"] == 2002
