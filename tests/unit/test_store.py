"""The snapshot store: validate, copy, publish, flip the pointer, never lose the last good one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conjuringd.paths import Paths
from conjuringd.store import SnapshotStore, config_digest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")


@pytest.fixture
def folder(tmp_path) -> Path:
    dst = tmp_path / "custom"
    shutil.copytree(REPO / "custom", dst)
    return dst


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_import_publishes_a_readonly_snapshot_and_flips_the_pointer(paths, folder):
    store = SnapshotStore(paths)
    outcome = store.import_folder(folder, {"kind": "local"})
    assert outcome.result == "applied"
    snapshot = store.snapshot_dir(outcome.config_hash)
    assert tree(snapshot) == tree(folder)
    assert all(p.stat().st_mode & 0o777 == 0o400 for p in snapshot.rglob("*") if p.is_file())
    assert all(p.stat().st_mode & 0o777 == 0o700 for p in [paths.configs, snapshot, *snapshot.rglob("*")] if p.is_dir())
    state = store.state.read()
    assert state.active == outcome.config_hash == config_digest(folder)
    assert state.active_source["kind"] == "local"
    assert store.import_folder(folder, {"kind": "local"}).result == "unchanged"


def test_invalid_import_changes_nothing(paths, folder):
    store = SnapshotStore(paths)
    good = store.import_folder(folder, {"kind": "local"}).config_hash
    (folder / "users.csv").write_text("name,password\nroot,x\n")
    outcome = store.import_folder(folder, {"kind": "local"})
    assert outcome.result == "invalid"
    assert any("users.csv:2" in str(p) for p in outcome.problems)
    assert store.state.read().active == good
    assert [p.name for p in paths.configs.iterdir()] == [good]


def test_import_killed_halfway_leaves_the_active_config_byte_for_byte(paths, folder):
    store = SnapshotStore(paths)
    good = store.import_folder(folder, {"kind": "local"}).config_hash
    before = tree(store.snapshot_dir(good))
    state_before = paths.state_file.read_bytes()
    (folder / "shared" / "extra.txt").write_text("new material\n")
    (folder / "apt.txt").write_text("curl\n")
    copied = []

    def pull_the_stick(path: Path) -> None:
        copied.append(path)
        if len(copied) == 3:
            raise OSError(5, "Input/output error (stick pulled)")

    with pytest.raises(OSError):
        SnapshotStore(paths, copy_hook=pull_the_stick).import_folder(folder, {"kind": "stick"})
    assert len(copied) == 3
    assert paths.state_file.read_bytes() == state_before
    assert tree(store.snapshot_dir(good)) == before
    assert [p.name for p in paths.configs.iterdir()] == [good], "no half-copied folder may remain"


def test_switching_back_reuses_the_existing_snapshot(paths, folder):
    store = SnapshotStore(paths)
    first = store.import_folder(folder, {"kind": "local"}).config_hash
    original = (folder / "apt.txt").read_bytes()
    (folder / "apt.txt").write_text("curl\n")
    second = store.import_folder(folder, {"kind": "local"}).config_hash
    (folder / "apt.txt").write_bytes(original)
    back = store.import_folder(folder, {"kind": "local"})
    assert back.result == "applied" and back.config_hash == first != second
    assert sorted(p.name for p in paths.configs.iterdir()) == sorted([first, second])


def test_prune_keeps_the_newest_plus_active_and_last_good(paths, folder):
    store = SnapshotStore(paths, keep=2)
    hashes = []
    for n in range(5):
        (folder / "apt.txt").write_text(f"pkg{n}\n")
        hashes.append(store.import_folder(folder, {"kind": "local"}).config_hash)
        if n == 0:
            store.mark_good(hashes[0])
    kept = {p.name for p in paths.configs.iterdir()}
    assert hashes[0] in kept, "last good must never be pruned"
    assert hashes[4] in kept, "active must never be pruned"
    assert len(kept) <= 3


def test_clean_leftovers_removes_interrupted_imports(paths, folder):
    store = SnapshotStore(paths)
    store.import_folder(folder, {"kind": "local"})
    leftover = paths.configs / ".import-crashed"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "f").write_text("x")
    store.clean_leftovers()
    assert not leftover.exists()


def test_digest_ignores_mtimes_and_excludes_home_backup(folder):
    before = config_digest(folder)
    for p in folder.rglob("*"):
        if p.is_file():
            p.touch()
    (folder / "home_backup").mkdir()
    (folder / "home_backup" / "ana.tar").write_bytes(b"x" * 10)
    assert config_digest(folder) == before


def test_snapshots_published_world_readable_before_are_made_root_only(paths, folder):
    store = SnapshotStore(paths)
    snapshot = store.snapshot_dir(store.import_folder(folder, {"kind": "local"}).config_hash)
    for path in [paths.configs, snapshot, *snapshot.rglob("*")]:  # as an older version left them
        path.chmod(0o755 if path.is_dir() else 0o444)
    store.clean_leftovers()
    assert (snapshot / "users.csv").stat().st_mode & 0o777 == 0o400
    assert snapshot.stat().st_mode & 0o777 == 0o700 and paths.configs.stat().st_mode & 0o777 == 0o700
    assert tree(snapshot) == tree(folder)
