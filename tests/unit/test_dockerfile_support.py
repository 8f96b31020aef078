"""Pure helpers of the hub adapter: build stream parsing, labels, run-time specs, UIDs, mirroring."""

from __future__ import annotations

import os

from conjuringd.adapters.docker_labels import (
    LABEL_IMAGE,
    LABEL_OWNER,
    LABEL_RESTART,
    BuildProgress,
    bootstrap_suite,
    container_labels,
    container_state,
    host_port,
    hub_settings,
    mmdebstrap_script,
    users_spec,
)
from conjuringd.adapters.hub_files import mirror_tree, write_atomic
from conjuringd.config.model import HubSettings
from conjuringd.hashing import owner_digest
from conjuringd.uids import FIRST_UID, UidMap
from tests.support.hubconfig import make_config


def test_build_progress_counts_steps_cache_hits_and_errors():
    bp = BuildProgress(tail_size=3)
    assert bp.feed({"stream": "Step 1/3 : FROM x\n"}) == (1, 3, "FROM x")
    assert bp.feed({"stream": " ---> Using cache\n"}) is None
    assert bp.feed({"stream": "Step 2/3 : RUN false\n ---> Running in abc\n"}) == (2, 3, "RUN false")
    bp.feed({"error": "The command '/bin/sh -c false' returned a non-zero code: 1",
             "errorDetail": {"message": "returned a non-zero code: 1"}})
    assert bp.cached == [1] and bp.step == 2 and "non-zero" in bp.error
    assert len(bp.tail) == 3 and bp.tail[-1].startswith("The command")


def test_container_state_reads_labels_and_applied_hashes():
    labels = container_labels("img", "rst", "cfg", "own")
    state = container_state("cid", labels, "running", {"cid": {"users": "u", "files": "f", "checked": True}}, "own")
    assert (state.image_hash, state.restart_hash, state.running, state.users_hash, state.files_hash) == (
        "img", "rst", True, "u", "f")
    assert state.ours and state.checked
    assert labels[LABEL_IMAGE] == "img" and labels[LABEL_RESTART] == "rst" and labels[LABEL_OWNER] == "own"
    stopped = container_state("other", labels, "exited", {"cid": {"users": "u"}}, "own")
    assert not stopped.running and stopped.users_hash == ""
    assert not stopped.checked, "a container with nothing recorded never passed a health check"


def test_a_container_is_ours_only_with_our_owner_label():
    labels = container_labels("img", "rst", "cfg", "theirs")
    assert not container_state("cid", labels, "running", {}, "ours").ours
    unlabelled = {LABEL_IMAGE: "img", LABEL_RESTART: "rst"}  # made by hand, or before owner labels
    assert not container_state("cid", unlabelled, "running", {}, "ours").ours
    assert not container_state("cid", unlabelled, "running", {}, "").ours, "no hub token yet: nothing is ours"


def test_owner_digest_ties_state_folder_and_token_without_showing_the_token(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    token = "f" * 64
    mine = owner_digest(tmp_path / "a", token)
    assert mine == owner_digest(tmp_path / "a" / ".." / "a", token), "the same folder, however it is spelled"
    assert mine != owner_digest(tmp_path / "b", token), "another state folder"
    assert mine != owner_digest(tmp_path / "a", "e" * 64), "another hub token"
    assert token not in mine and len(mine) == 64


def test_host_port_reads_the_hub_binding():
    attrs = {"HostConfig": {"PortBindings": {"8000/tcp": [{"HostIp": "", "HostPort": "18989"}]}}}
    assert host_port(attrs, 8989) == 18989
    assert host_port({"HostConfig": {"PortBindings": None}}, 8989) == 8989
    assert host_port({}, 8989) == 8989


def test_users_spec_and_settings(tmp_path):
    config = make_config(tmp_path, users=(("a", "pa", False), ("b", "pb", True)), certs=False,
                         hub=HubSettings(spawn_timeout=111, idle_timeout=0, mem_limit="1G"))
    spec = users_spec(config, {"a": 2000, "b": 2001}, {"name": "probe"})
    assert spec["users"] == [{"name": "a", "password": "pa", "admin": False, "uid": 2000},
                             {"name": "b", "password": "pb", "admin": True, "uid": 2001}]
    settings = hub_settings(config.settings.hub)
    assert settings["spawn_timeout"] == 111 and settings["idle_timeout"] == 0 and settings["mem_limit"] == "1G"


def test_bootstrap_script_uses_pipefail_and_the_suite():
    script = mmdebstrap_script("bookworm", "local/debian:bookworm", "/usr/bin/docker")
    assert script.startswith("set -o pipefail\n")
    assert "bookworm-security main" in script and "| /usr/bin/docker import" in script
    assert bootstrap_suite("debian:bookworm") == "bookworm" and bootstrap_suite("ubuntu:24.04") == ""


def test_uids_are_stable_forever(tmp_path):
    uids = UidMap(tmp_path / "uids.json")
    first = uids.assign(["ann", "bob", "cat"])
    assert first == {"ann": FIRST_UID, "bob": FIRST_UID + 1, "cat": FIRST_UID + 2}
    # bob removed, a new user inserted before the others: nobody's UID moves, none is reused
    second = UidMap(tmp_path / "uids.json").assign(["zed", "ann", "cat"])
    assert second == {"zed": FIRST_UID + 3, "ann": FIRST_UID, "cat": FIRST_UID + 2}
    assert UidMap(tmp_path / "uids.json").assign(["bob"]) == {"bob": FIRST_UID + 1}


def test_mirror_tree_copies_updates_and_deletes(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("one")
    (src / "sub" / "b.txt").write_text("two")
    assert mirror_tree(src, dst) == 2
    assert (dst / "sub" / "b.txt").read_text() == "two"
    assert oct(os.stat(dst / "a.txt").st_mode & 0o777) == oct(0o644)
    assert mirror_tree(src, dst) == 0
    inode = os.stat(dst).st_ino
    (src / "a.txt").write_text("changed")
    (src / "sub" / "b.txt").unlink()
    (src / "sub").rmdir()
    assert mirror_tree(src, dst) >= 2
    assert (dst / "a.txt").read_text() == "changed" and not (dst / "sub").exists()
    assert os.stat(dst).st_ino == inode  # the bind-mounted folder itself is kept


def test_write_atomic_reports_changes(tmp_path):
    path = tmp_path / "x" / "f"
    assert write_atomic(path, b"a", 0o600)
    assert not write_atomic(path, b"a", 0o600)
    assert write_atomic(path, b"b", 0o600) and path.read_bytes() == b"b"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_main_job_logs_in_as_the_first_student(tmp_path):
    from conjuringd.adapters.hub_ready import candidate_urls, first_student

    users = tmp_path / "users.csv"
    users.write_text("name,password,admin\nprof, pw0 ,yes\n\nstudent1,change-me-1\nstudent2,x,\n")
    assert first_student(users) == ("student1", "change-me-1")
    users.write_text("name,password,admin\nprof,pw0,TRUE\n")
    assert first_student(users) == ("prof", "pw0")  # only admins: log in as one
    status = tmp_path / "status.json"
    status.write_text('{"hub_urls": ["http://10.42.0.1:8989"]}')
    assert candidate_urls(status, 8989) == ["http://10.42.0.1:8989", "http://127.0.0.1:8989"]
    assert candidate_urls(tmp_path / "missing.json", 1) == ["http://127.0.0.1:1"]
