"""On the host, as a user who is not root: the teacher's passwords and the hub's secrets cannot be read.

The real snapshot store imports a configuration and the real DockerHub writes
every file the hub container mounts (no container is started: these are the
files on the host). Then a process running as `nobody` walks the whole state
folder, reads every file it can and looks for the passwords, the service token
and the teacher's srv/ configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conjuringd.adapters.docker import DockerHub
from conjuringd.paths import Paths
from conjuringd.store import SnapshotStore
from tests.support.docker import in_ci
from tests.support.hubconfig import desired

NOBODY = 65534
SRV_SECRET = "teacher-srv-secret-7f3a"

READER = r"""
import json, os, sys
root, wanted = sys.argv[1], json.loads(sys.argv[2])
read, found, refused = 0, [], []
for top, dirs, files in os.walk(root, onerror=lambda e: refused.append(e.filename)):
    for name in files:
        path = os.path.join(top, name)
        try:
            data = open(path, "rb").read()
        except OSError:
            refused.append(path)
            continue
        read += 1
        found += [f"{w!r} in {path}" for w in wanted if w.encode() in data]
print(json.dumps({"read": read, "found": found, "refused": refused}))
"""


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("CI runs as root: this test must run")
        pytest.skip("needs root to write root-only files and read them back as another uid")


def as_nobody(root, wanted) -> dict:
    done = subprocess.run([sys.executable, "-c", READER, str(root), json.dumps(wanted)], user=NOBODY, group=NOBODY,
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def open_dir():
    """A folder other users can reach, as /var/lib is (pytest's own temp folder is private)."""
    path = Path(tempfile.mkdtemp(prefix="conj-host-secrets-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_snapshots_and_hub_secrets_are_unreadable_by_other_users(root_only, open_dir):
    tmp_path = open_dir
    for parent in tmp_path.parents:
        if parent.stat().st_mode & 0o001 == 0:
            pytest.fail(f"{parent} is not searchable by other users: the test would prove nothing")
    paths = Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")
    custom = tmp_path / "custom"
    (custom / "srv").mkdir(parents=True)
    (custom / "shared").mkdir()
    (custom / "users.csv").write_text("name,password,admin\nana,ana-secret-pw-1,\nben,ben-secret-pw-2,yes\n")
    (custom / "srv" / "jupyterhub_config.py").write_text(f"c.Something.api_key = '{SRV_SECRET}'\n")
    (custom / "shared" / "notes.txt").write_text("course notes for everyone\n")
    store = SnapshotStore(paths)
    outcome = store.import_folder(custom, {"kind": "local"})
    assert outcome.result == "applied", outcome.problems
    from conjuringd.config.load import load_custom
    config, _ = load_custom(store.snapshot_dir(outcome.config_hash), paths.machine_toml)
    hub = DockerHub(paths, client_factory=lambda: None)
    want = desired(config)
    hub._prepare(type(want)(hashes=want.hashes, config=config, config_dir=str(store.snapshot_dir(outcome.config_hash))))
    token = (hub.secrets_dir / "service-token").read_text().strip()
    probe = json.loads((hub.secrets_dir / "users.json").read_text())["probe"]["password"]
    seen = as_nobody(paths.state_dir, ["ana-secret-pw-1", "ben-secret-pw-2", SRV_SECRET, token, probe])
    assert seen["found"] == [], seen["found"]
    assert seen["read"] >= 2 and any(p.endswith("shared/notes.txt") for p in map(str, hub.hub_dir.rglob("*")))
    # the control: the same reader, as root, finds them all
    done = subprocess.run([sys.executable, "-c", READER, str(paths.state_dir), json.dumps([SRV_SECRET, token])],
                          capture_output=True, text=True, timeout=60)
    assert len(json.loads(done.stdout)["found"]) >= 2
