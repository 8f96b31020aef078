"""conjuringctl validate and users new import none of the daemon-only libraries, and run where os has no
O_NOFOLLOW/O_NONBLOCK/O_CLOEXEC (Windows), links still skipped. Fast guards; the real proof is
tests/integration/test_validate_plain_pip.py (a venv without those libraries)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
DAEMON_ONLY = ("pyudev", "dbus_next", "docker", "sdnotify", "watchdog")

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('daemon-only library imported: ' + name)
sys.meta_path.insert(0, Block())
"""
WINDOWS_OS = "import os\nfor flag in ('O_NOFOLLOW', 'O_NONBLOCK', 'O_CLOEXEC'):\n    delattr(os, flag)\n"
MAIN = """
from conjuringd import ctl
try:
    ctl.main({argv!r})
finally:
    print('loaded:', sorted({{m.split('.')[0] for m in sys.modules}} & set({blocked!r})))
"""


def ctl_in_subprocess(*argv, prelude: str = "") -> subprocess.CompletedProcess:
    code = prelude + BLOCK.format(blocked=DAEMON_ONLY) + MAIN.format(argv=[str(a) for a in argv], blocked=DAEMON_ONLY)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_validate_and_users_new_need_no_daemon_library(tmp_path):
    done = ctl_in_subprocess("validate", DATA / "original" / "custom")
    assert done.returncode == 0, done.stderr
    assert "0 error(s), 2 warning(s)" in done.stdout and "loaded: []" in done.stdout
    done = ctl_in_subprocess("validate", DATA / "broken" / "custom")
    assert done.returncode == 1 and "loaded: []" in done.stdout, done.stderr
    done = ctl_in_subprocess("users", "new", "2", "-o", tmp_path / "u.csv")
    assert done.returncode == 0 and "loaded: []" in done.stdout, done.stderr


def test_the_blocker_would_notice_a_daemon_import():
    probe = subprocess.run([sys.executable, "-c", BLOCK.format(blocked=DAEMON_ONLY) + "import docker"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "daemon-only library imported: docker" in probe.stderr


def test_validate_without_the_posix_open_flags_still_skips_links(tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(DATA / "original" / "custom", folder)
    (tmp_path / "elsewhere.txt").write_text("secret-package\n")
    (folder / "apt.txt").unlink()
    os.symlink(tmp_path / "elsewhere.txt", folder / "apt.txt")
    (folder / "shared" / "linked.txt").symlink_to(tmp_path / "elsewhere.txt")
    posix = ctl_in_subprocess("validate", folder)
    windows = ctl_in_subprocess("validate", folder, prelude=WINDOWS_OS)
    assert windows.returncode == posix.returncode == 0, windows.stderr
    assert windows.stdout == posix.stdout
    assert "custom/apt.txt: warning: is a symbolic link: skipped (links are never followed)" in windows.stdout
    assert "secret-package" not in windows.stdout
