"""`conjuringctl validate` from a plain `pip install` on a teacher's laptop: a fresh venv without Debian's
python3-* libraries (no --system-site-packages), the project installed by pip with only the dependencies
it declares (from PyPI), the daemon-only libraries provably absent. Needs network access to PyPI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
DATA = TOP / "tests" / "unit" / "data"
DAEMON_ONLY = ("pyudev", "dbus_next", "docker", "sdnotify", "watchdog")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, whose dist-packages hold python3-docker & co.


def run(argv: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def laptop(tmp_path_factory) -> Path:
    """bin/ of a venv with conjuringd installed as `pip install` would from a source release."""
    root = tmp_path_factory.mktemp("laptop")
    source = root / "src"  # a copy, so pip's build leaves nothing in the work tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(TOP / name, source / name)
    shutil.copytree(TOP / "conjuringd", source / "conjuringd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    made = run([SYSTEM_PYTHON, "-m", "venv", venv])
    assert made.returncode == 0, made.stderr
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    installed = run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", source])
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return venv / "bin"


def test_the_daemon_only_libraries_are_not_in_that_venv(laptop):
    for module in DAEMON_ONLY:
        probe = run([laptop / "python", "-c", f"import {module}"])
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, (module, probe.stderr)
    # while Debian's own python has them: the venv really is cut off from dist-packages
    probe = run([SYSTEM_PYTHON, "-c", "import " + ", ".join(DAEMON_ONLY)])
    assert probe.returncode == 0, probe.stderr
    listed = run([laptop / "python", "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    assert "conjuringd==" in listed and "pyyaml==" in listed and "structlog==" in listed
    for dist in ("pyudev", "dbus-next", "docker", "sdnotify", "watchdog"):
        assert f"\n{dist}==" not in "\n" + listed, dist


def test_the_daemon_command_there_says_in_one_line_what_to_install(laptop):
    done = run([laptop / "conjuringd", "--hub", "none"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'conjuringd[daemon]'" in lines[0], lines[0]
    assert "missing here: pyudev, dbus-next, docker, watchdog, sdnotify, segno;" in lines[0], lines[0]


def test_validate_a_good_folder_exits_zero(laptop):
    done = run([laptop / "conjuringctl", "validate", DATA / "original" / "custom"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 error(s), 2 warning(s)"
    assert "Traceback" not in done.stderr


def test_validate_a_spreadsheet_users_csv_warns_and_exits_zero(laptop, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(DATA / "original" / "custom", folder)
    shutil.copy(DATA / "users" / "spreadsheet.csv", folder / "users.csv")
    done = run([laptop / "conjuringctl", "validate", folder])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "custom/users.csv:3: warning: admin values other than 1, y, yes, t, true" in done.stdout


def test_validate_a_bad_folder_exits_one_with_every_problem(laptop):
    done = run([laptop / "conjuringctl", "validate", DATA / "broken" / "custom"])
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert "custom/users.csv:4: error: user name 'root' is reserved (a system account or group of the hub)" in lines
    assert "custom/requirements.txt:2: error: cannot parse requirement 'numpy 1.2'" in "\n".join(lines)
    errors = sum(": error: " in line for line in lines[:-1])
    assert errors > 10 and lines[-1] == f"{errors} error(s), {len(lines) - 1 - errors} warning(s)"


def test_validate_a_missing_folder_is_a_usage_error(laptop, tmp_path):
    done = run([laptop / "conjuringctl", "validate", tmp_path / "nowhere"])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr


def test_users_new_works_there_too_and_its_file_validates(laptop, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(DATA / "original" / "custom", folder)
    (folder / "users.csv").unlink()
    made = run([laptop / "conjuringctl", "users", "new", "4", "--admin", "teacher", "-o", folder / "users.csv"])
    assert made.returncode == 0, made.stderr
    done = run([laptop / "conjuringctl", "validate", folder])
    assert done.returncode == 0 and done.stdout.strip().endswith("0 error(s), 0 warning(s)"), done.stdout

