"""Sticks merged onto the active configuration file by file, as the original's `cp -Ru` did.

The snapshot store with a real state folder: the box's active configuration is
the original Conjuring's shipped folder (tests/unit/data/original/custom), then
a stick's folder is imported with merge=True, as the daemon does for sticks and
`conjuringctl apply`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conjuringd.merge import plan_merge, role
from conjuringd.paths import Paths
from conjuringd.reconcile.model import ImportOutcome
from conjuringd.sticks.report import StickReport, render_report
from conjuringd.store import SnapshotStore, config_digest

DATA = Path(__file__).parent / "data"
BOX = DATA / "original" / "custom"


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path) -> SnapshotStore:
    store = SnapshotStore(Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run"))
    assert store.import_folder(BOX, {"kind": "local"}).result == "applied"
    return store


def stick(tmp_path: Path, content: dict[str, str]) -> Path:
    custom = tmp_path / "stick" / "conjuring" / "custom"
    for rel, text in content.items():
        (custom / rel).parent.mkdir(parents=True, exist_ok=True)
        (custom / rel).write_text(text)
    return custom


def active(store: SnapshotStore) -> dict[str, bytes]:
    return files(store.snapshot_dir(store.state.read().active))


def test_a_stick_with_only_users_csv_replaces_users_and_keeps_everything_else(store, tmp_path):
    before = active(store)
    custom = stick(tmp_path, {"users.csv": "name,password,admin\nnina,Pebble-Road-4,\nteacher,s3cret,1\n"})
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    assert outcome.result == "applied", outcome
    after = active(store)
    assert after["users.csv"] == (custom / "users.csv").read_bytes()
    assert {rel: data for rel, data in after.items() if rel != "users.csv"} == \
        {rel: data for rel, data in before.items() if rel != "users.csv"}
    # the six files the issue saw vanish are all there
    for rel in ("shared/week1/notes.md", "home_default/.bashrc", "home_default/.profile", "requirements.txt",
                "apt.txt", "srv/jupyterhub_config.py", "environment.yml", "environment-geo.yml"):
        assert rel in after, rel
    merge = outcome.merge
    assert merge is not None and not merge.complete
    assert merge.replaced == ("users.csv",) and merge.added == () and merge.removed == ()
    assert set(merge.kept) == set(before) - {"users.csv"}


def test_a_stick_with_only_a_new_shared_file_adds_it(store, tmp_path):
    before = active(store)
    custom = stick(tmp_path, {"shared/week2/loops.md": "# Week 2\n"})
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    assert outcome.result == "applied"
    assert active(store) == {**before, "shared/week2/loops.md": b"# Week 2\n"}
    assert outcome.merge.added == ("shared/week2/loops.md",) and outcome.merge.removed == ()


def test_a_stick_identical_to_what_is_active_is_unchanged(store, tmp_path):
    custom = stick(tmp_path, {"apt.txt": (BOX / "apt.txt").read_text()})
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    assert outcome.result == "unchanged" and outcome.merge.same == ("apt.txt",)


def test_a_complete_stick_replaces_everything_and_its_marker_is_not_configuration(store, tmp_path):
    custom = stick(tmp_path, {"users.csv": "name,password,admin\nsolo,Lone-Pine-77,yes\n", "complete.TXT": ""})
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    assert outcome.result == "applied"
    assert active(store) == {"users.csv": (custom / "users.csv").read_bytes()}
    assert outcome.config_hash == config_digest(custom)  # the marker is not part of the digest either
    assert outcome.merge.complete and outcome.merge.marker == "complete.TXT"
    assert "shared/week1/notes.md" in outcome.merge.removed and outcome.merge.kept == ()


def test_a_stick_with_an_error_changes_nothing_and_says_which_files_were_its_own(store, tmp_path):
    before_hash, before = store.state.read().active, active(store)
    custom = stick(tmp_path, {"users.csv": "name,password,admin\nana,pw-1,\nana,pw-2,\n"})
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    assert outcome.result == "invalid"
    assert any("users.csv:3" in str(p) for p in outcome.problems)
    assert outcome.merge.replaced == ("users.csv",)
    assert store.state.read().active == before_hash and active(store) == before


def test_the_local_folder_and_apply_complete_still_replace(store, tmp_path):
    custom = stick(tmp_path, {"users.csv": "name,password,admin\nsolo,Lone-Pine-77,yes\n"})
    outcome = store.import_folder(custom, {"kind": "local"})  # merge=False: the default
    assert outcome.result == "applied" and outcome.merge is None
    assert set(active(store)) == {"users.csv"}


def test_a_partial_stick_is_refused_when_the_active_snapshot_is_gone(store, tmp_path):
    shutil.rmtree(store.snapshot_dir(store.state.read().active))
    custom = stick(tmp_path, {"users.csv": "name,password,admin\nsolo,Lone-Pine-77,yes\n"})
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    assert outcome.result == "failed" and "COMPLETE" in outcome.message
    (custom / "COMPLETE").write_text("")
    assert store.import_folder(custom, {"kind": "stick"}, merge=True).result == "applied"


def test_files_with_one_role_replace_each_other(store, tmp_path):
    custom = stick(tmp_path, {
        "environment.yaml": "channels: [conda-forge]\ndependencies:\n  - numpy\n",
        "requirements-geo.txt": "shapely\n",
    })
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    assert outcome.result == "applied", outcome.problems
    after = active(store)
    assert "environment.yml" not in after and "environment-geo.yml" not in after
    assert after["environment.yaml"].startswith(b"channels") and after["requirements-geo.txt"] == b"shapely\n"
    assert set(outcome.merge.removed) == {"environment.yml", "environment-geo.yml"}


def test_roles():
    assert role("environment.yml") == role("environment.yaml") == "environment"
    assert role("environment-Geo.yml") == role("environment_geo.yaml") == role("requirements-geo.txt") == "kernel:geo"
    assert role("requirements.txt") == "requirements.txt" and role("shared/environment.yml") == "shared/environment.yml"


def test_a_file_replaces_a_folder_of_that_name_and_the_other_way_round(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("box-notes", "box-file", "stick-notes", "stick-file"):
        (tmp_path / "a" / name).write_text(name)
    p = tmp_path / "a"
    base = {"shared/notes/one.md": p / "box-notes", "shared/readme": p / "box-file", "users.csv": p / "box-file"}
    incoming = {"shared/notes": p / "stick-notes", "shared/readme/part1.md": p / "stick-file"}
    merged, summary = plan_merge(base, incoming)
    assert merged == {"users.csv": p / "box-file", **incoming}
    assert summary.removed == ("shared/notes/one.md", "shared/readme") and summary.kept == ("users.csv",)


def test_the_report_lists_what_came_from_the_stick_and_what_was_kept(store, tmp_path):
    custom = stick(tmp_path, {"users.csv": "name,password,admin\nnina,Pebble-Road-4,\n", "shared/week2/a.md": "a\n"})
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    text = render_report(StickReport("2026-12-02T02:00:00Z", "nuc", "/dev/sdb1", "STICK", "AB-CD", outcome))
    assert "Files from this stick" in text and "users.csv   (replaced)" in text and "shared/week2/a.md   (new)" in text
    kept = text.split("Files kept on the box")[1]
    assert "Kept from the box's configuration (9 file(s), not on this stick):" in kept
    assert "  srv/jupyterhub_config.py" in kept and "  home_default/.bashrc" in kept
    complete = render_report(StickReport("t", "nuc", "/dev/sdb1", "S", "U", ImportOutcome("applied", "c" * 64)))
    assert "Files from this stick" not in complete  # the local folder and apply --complete: no merge to explain


def test_long_lists_are_cut_and_counted(store, tmp_path):
    custom = stick(tmp_path, {f"shared/w3/{i:03d}.md": f"{i}\n" for i in range(45)})
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    text = render_report(StickReport("t", "nuc", "/dev/sdb1", "S", "U", outcome))
    assert "shared/w3/039.md   (new)" in text and "shared/w3/040.md" not in text and "... and 5 more" in text


def test_conjuringctl_plan_shows_the_merge_apply_would_make(store, tmp_path, capsys):
    from conjuringd import ctl

    paths = store.paths
    custom = stick(tmp_path, {"shared/week2/loops.md": "# Week 2\n"})  # no users.csv: not a configuration alone
    args = ["--state-dir", str(paths.state_dir), "--config-dir", str(paths.config_dir), "--runtime-dir", str(paths.runtime_dir)]
    with pytest.raises(SystemExit) as exited:
        ctl.main([*args, "plan", str(custom)])
    out = capsys.readouterr().out
    assert exited.value.code == 0, out
    assert "merged onto the active configuration: 1 new, 0 replaced, 0 identical file(s); 10 kept, 0 removed" in out
    with pytest.raises(SystemExit) as exited:
        ctl.main([*args, "plan", "--complete", str(custom)])
    out = capsys.readouterr().out
    assert exited.value.code == 1 and "merged onto" not in out and "users.csv: error: is missing" in out, out


async def test_the_reconciler_merges_sticks_and_apply_and_replaces_with_the_local_folder(tmp_path):
    """Which rule each source gets, through the reconciler (a real store, no hub)."""
    from conjuringd.reconcile.execute import Adapters
    from conjuringd.reconcile.loop import Reconciler
    from conjuringd.reconcile.triggers import Heartbeat, Triggers
    from conjuringd.status import StatusBoard

    class Silent:
        def notify(self, state):
            pass

    paths = Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")
    shutil.copytree(BOX, paths.local_custom)
    store = SnapshotStore(paths)
    reconciler = Reconciler(store, Adapters(), StatusBoard(paths.status_file, Silent()), Triggers(quiet=0.01),
                            Heartbeat(), hub_enabled=False)
    await reconciler.run_pass(("startup",))
    box = set(active(store))
    custom = stick(tmp_path, {"shared/week2/a.md": "a\n"})
    outcome = await reconciler.import_folder(custom, {"kind": "stick", "device": "/dev/sdz1"})
    assert outcome.result == "applied" and set(active(store)) == box | {"shared/week2/a.md"}
    (custom / "shared" / "week2" / "a.md").write_text("b\n")
    done = reconciler.request_apply(custom, {"kind": "conjuringctl", "path": str(custom)})
    await reconciler.run_pass(("apply",))
    assert (await done).merge.replaced == ("shared/week2/a.md",) and set(active(store)) == box | {"shared/week2/a.md"}
    (paths.local_custom / "apt.txt").write_text("curl\n")  # root edits the local folder: it is the whole configuration
    await reconciler.run_pass(("local: edit",))
    assert set(active(store)) == box and active(store)["apt.txt"] == b"curl\n"
    whole = tmp_path / "whole"
    whole.mkdir()
    (whole / "users.csv").write_text("name,password,admin\nsolo,Lone-Pine-77,yes\n")
    done = reconciler.request_apply(whole, {"kind": "conjuringctl"}, merge=False)  # apply --complete
    await reconciler.run_pass(("apply",))
    assert (await done).merge is None and set(active(store)) == {"users.csv"}


def test_an_empty_stick_is_refused_not_unchanged(store, tmp_path):
    """An empty conjuring/custom (or one whose every file was skipped) merges to the active configuration;
    it must not count as "unchanged", which would earn it a backup of every home (trust = "any")."""
    custom = tmp_path / "empty" / "conjuring" / "custom"
    custom.mkdir(parents=True)
    (custom / "home_backup").mkdir()  # not configuration either
    before = store.state.read().active
    outcome = store.import_folder(custom, {"kind": "stick"}, merge=True)
    assert outcome.result == "invalid" and "nothing imported" in outcome.message
    assert store.state.read().active == before
