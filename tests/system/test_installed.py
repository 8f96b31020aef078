"""The installed .deb in a container that boots systemd, as an operator would use it.

`apt-get install ./conjuringd_*.deb`, then systemctl / journalctl /
conjuringctl: READY=1, the first reconcile in the journal, status for root and
the `conjuring` group; then the hub from the default configuration (plus the
CA of this network's TLS proxy, as a school would add it) on the host's
dockerd, a student logging in, and with the hub serving: reload, restart, the
watchdog restarting a frozen daemon, an upgrade, remove, and a purge that keeps
the student homes. The hub container's ID must survive all of them.

The tests share one container and run in file order (purge is last).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from conjuringd.adapters.hub_http import HubSession, health
from tests.support import docker as dockersupport
from tests.support.docker import in_ci
from tests.system.box import Box, build_image, docker
from tests.system.conftest import JOURNAL, TIMINGS
from tests.system.debbuild import Unbuildable, build_deb, require_or_skip

pytestmark = [pytest.mark.system, pytest.mark.slow]

CONTAINER = "conjuring-systemtest"
# Same path on the host and in the container: the daemon inside hands it to
# the host's dockerd as a bind-mount source.
STATE = Path("/var/lib/conjuring")
OURS = Path("/var/lib/conjuring.systemtest")  # marks a host STATE this test created
DROPIN = "/etc/systemd/system/conjuringd.service.d"
# The first start runs without a hub (seeding, READY, status); the unit's own
# ExecStart (hub, NetworkManager, udev) takes over in the hub test.
DAEMON = "/usr/bin/conjuringd --hub none"
HUB_NAMES = ("conjuring", "conjuring-previous")  # the daemon's container names on the host
HUB = "http://127.0.0.1:8989"  # the default port, published on the host
STUDENT_NAME = "student1"  # from the default users.csv, whose passwords say "(generated)"
BROKEN_MACHINE = '[hub]\nidle_timeout = 900\nmem_limit = "1 GB"\n'
PROXY_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # trusted by this network's TLS proxy


def claim_host_state() -> None:
    """Use the host's STATE only if it is absent or was made by an earlier run of this test."""
    if STATE.exists() and not OURS.exists():
        require_or_skip(Exception(f"{STATE} exists on this host and is not the system test's; not touching it"))
    OURS.touch()
    STATE.mkdir(exist_ok=True)


def release_host_state() -> None:
    shutil.rmtree(STATE, ignore_errors=True)
    OURS.unlink(missing_ok=True)


def claim_hub_names() -> None:
    """The hub's container names are machine-wide: take them only from a finished run."""
    existing = [name for name in HUB_NAMES if docker("inspect", name, check=False).returncode == 0]
    if existing and not in_ci():
        require_or_skip(Exception(f"hub container(s) {existing} exist on this dockerd (another test running?)"))
    release_hub()


def release_hub() -> None:
    docker("rm", "-f", *HUB_NAMES, check=False)


def hub_id() -> str:
    result = docker("inspect", "-f", "{{.Id}}", HUB_NAMES[0], check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


@pytest.fixture(scope="module")
def box(request, tmp_path_factory):
    if os.geteuid() != 0:
        require_or_skip(Exception("the system test needs root (dockerd, bind mounts)"))
    timings: dict[str, float] = {}
    started = time.monotonic()
    debs = tmp_path_factory.mktemp("debs")
    try:
        build_deb(debs)
    except Unbuildable as exc:
        require_or_skip(exc)
    timings["build .deb"] = time.monotonic() - started
    started = time.monotonic()
    try:
        dockersupport.ensure_dockerd()
        dockersupport.ensure_base_image()
    except (dockersupport.Unavailable, OSError) as exc:
        require_or_skip(exc)
    timings["dockerd + base image"] = time.monotonic() - started
    started = time.monotonic()
    build_image()
    timings["systemd image"] = time.monotonic() - started
    claim_hub_names()
    claim_host_state()
    container = Box(CONTAINER)
    try:
        container = install(debs, timings)
        request.config.stash[TIMINGS] = container.timings  # printed in the closing summary
        yield container
    finally:
        keep_journal(container, debs.parent / "journal.txt", request.config)
        container.remove()
        release_hub()
        release_host_state()


def keep_journal(container: Box, path: Path, config) -> None:
    """The container's whole journal outlives it, for reading after a failure."""
    result = container.sh("journalctl -o short-precise --no-pager", check=False)
    if result.returncode == 0:
        path.write_text(result.stdout)
        config.stash[JOURNAL] = str(path)


def install(debs: Path, timings: dict[str, float]) -> Box:
    """Boot the systemd container, then `apt-get install ./conjuringd_*.deb` in it."""
    started = time.monotonic()
    container = Box.start(CONTAINER, [(str(debs), "/mnt/debs", "ro"),
                                      ("/var/run/docker.sock", "/run/docker.sock", "rw"),
                                      (str(STATE), str(STATE), "rw")])
    container.timings.update(timings)
    container.stage("container boot", started)
    container.write(f"{DROPIN}/10-systemtest.conf", f"[Service]\nExecStart=\nExecStart={DAEMON}\n")
    started = time.monotonic()
    container.sh("apt-get update -qq", timeout=300)
    container.stage("apt-get update", started)
    started = time.monotonic()
    result = container.sh("apt-get install -y --no-install-recommends /mnt/debs/conjuringd_*_all.deb 2>&1",
                          timeout=600)
    container.stage("apt-get install (postinst starts the unit)", started)
    container.install_log = result.stdout
    return container


def journal_lines(box: Box, event: str, pid: str = "") -> list[str]:
    """The daemon's log lines for `event` (key=value lines: `event=NAME`, or `[level] NAME`), of process `pid`
    if given."""
    return [line for line in box.journal(pid=pid).splitlines() if re.search(rf"(\bevent=|\] ){event}\b", line)]


def pass_ids(box: Box, trigger: str = "", pid: str = "") -> list[int]:
    """Ids of the passes whose trigger starts with `trigger` (values may be quoted), of daemon process `pid`
    if given: every daemon process numbers its passes from 1."""
    ids = []
    for line in journal_lines(box, "pass_start", pid):
        found = re.search(r'trigger=(?:"([^"]*)"|(\S+))', line)
        number = re.search(r"pass_id=(\d+)", line)
        if found and number and (found.group(1) or found.group(2) or "").startswith(trigger):
            ids.append(int(number.group(1)))
    return ids


def test_install_starts_the_service_through_ready(box):
    assert "Setting up conjuringd" in box.install_log
    assert "Setting up python3-structlog" in box.install_log  # apt resolved the Depends
    assert box.prop("conjuringd", "ActiveState") == "active"
    assert box.prop("conjuringd", "SubState") == "running"
    assert box.prop("conjuringd", "Type") == "notify"
    # STATUS= reached systemd too.
    box.wait_for(lambda: box.prop("conjuringd", "StatusText"), 30, "a STATUS= text")
    assert box.sh("getent group conjuring").returncode == 0


def test_journal_shows_startup_and_first_reconcile(box):
    started = time.monotonic()
    box.wait_for(lambda: journal_lines(box, "converged"), 60, "the first pass to converge")
    box.stage("first reconcile converged", started)
    journal = box.journal()
    assert journal_lines(box, "ready"), journal
    assert "seeded_local_config" in journal
    assert 1 in pass_ids(box, "startup"), journal
    assert "Traceback" not in journal


def test_installed_unit_verifies(box):
    result = box.sh("systemd-analyze verify --man=no /lib/systemd/system/conjuringd.service 2>&1", check=False)
    assert result.returncode == 0, result.stdout


def test_first_start_seeded_the_local_configuration(box):
    assert box.sh("diff -r /usr/share/conjuring/custom /etc/conjuring/custom", check=False).returncode == 0
    assert box.sh("test -f /etc/conjuring/conjuring.toml").returncode == 0


def test_conjuringctl_status_for_root_and_the_group(box):
    root = box.sh("conjuringctl status")
    assert "phase:" in root.stdout and "config:" in root.stdout
    status = json.loads(box.sh("conjuringctl status --json").stdout)
    assert status["pid"] == int(box.prop("conjuringd", "MainPID"))
    box.sh("id teacher >/dev/null 2>&1 || useradd -m -G conjuring teacher")
    box.sh("id visitor >/dev/null 2>&1 || useradd -m visitor")
    member = box.sh("conjuringctl status", user="teacher", check=False)
    assert member.returncode == 0 and "phase:" in member.stdout, member.stderr
    other = box.sh("conjuringctl status", user="visitor", check=False)
    assert other.returncode == 3
    assert "'conjuring' group" in other.stderr


def test_hub_comes_up_from_the_default_configuration(box):
    if PROXY_CA.exists():
        box.write("/etc/conjuring/custom/certs/network-proxy.crt", PROXY_CA.read_text())
    box.sh(f"rm {DROPIN}/10-systemtest.conf && systemctl daemon-reload")
    started = time.monotonic()
    box.sh("systemctl restart conjuringd")
    assert box.prop("conjuringd", "SubState") == "running"

    def up():
        journal = box.journal()
        assert "build_failed" not in journal and "hub_unhealthy_rollback" not in journal, journal[-4000:]
        return "hub_replaced" in journal and hub_id() and health(HUB)

    box.wait_for(up, 1200, "the hub image to build and the hub to answer", interval=2)
    box.stage("hub: build + start + health check", started)
    status = json.loads(box.sh("conjuringctl status --json").stdout)
    assert any(url.endswith(":8989") for url in status["hub_urls"]), status
    labels = json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", HUB_NAMES[0]).stdout)
    assert labels.get("org.conjuring.image"), labels


def student() -> tuple[str, str]:
    """The default student and the password this box made for them (root-only, in the state folder)."""
    made = json.loads((STATE / "secrets" / "generated-passwords.json").read_text())
    return STUDENT_NAME, made[STUDENT_NAME]


def test_student_logs_in_and_works(box):
    assert HubSession(HUB).login(STUDENT_NAME, "not-the-password") == 403
    assert HubSession(HUB).login(STUDENT_NAME, "change-me-1") == 403, "the old shipped example password"
    assert box.sh("stat -c %a /var/lib/conjuring/secrets/generated-passwords.json").stdout.strip() == "600"
    shown = box.sh("conjuringctl status --show-passwords").stdout
    assert f"  {STUDENT_NAME}  {student()[1]}" in shown, shown
    session = HubSession(HUB)
    started = time.monotonic()
    assert session.login(*student()) == 302
    assert session.wait_lab(STUDENT_NAME, 300) == 200
    box.stage("student login + server spawn", started)
    status, _, _ = session.request("PUT", f"/user/{STUDENT_NAME}/api/contents/notes.txt",
                                   {"type": "file", "format": "text", "content": "my work"})
    assert status == 201
    assert (STATE / "home" / STUDENT_NAME / "notes.txt").read_text() == "my work"  # on the host


def test_a_broken_machine_file_leaves_the_daemon_running_and_the_hub_serving(box):
    """One typo in /etc/conjuring/conjuring.toml used to make the daemon exit at boot, for ever."""
    hub, restarts = hub_id(), int(box.prop("conjuringd", "NRestarts"))
    box.sh("cp /etc/conjuring/conjuring.toml /root/conjuring.toml.good")
    box.write("/etc/conjuring/conjuring.toml", BROKEN_MACHINE)
    started = time.monotonic()
    box.sh("systemctl restart conjuringd")  # a boot with the broken file
    pid = box.prop("conjuringd", "MainPID")
    status_text = box.wait_for(lambda: "has 1 error(s)" in (t := box.prop("conjuringd", "StatusText")) and t, 60,
                               "STATUS= to name the broken machine file")
    box.stage("broken machine file: restart -> reported", started)
    assert "running with the last good machine settings" in status_text, status_text
    shown = box.sh("conjuringctl status").stdout
    assert "machine:  /etc/conjuring/conjuring.toml has 1 error(s)" in shown, shown
    assert '/etc/conjuring/conjuring.toml:3: error: [hub] mem_limit: "1 GB" is not a size' in shown, shown
    assert journal_lines(box, "machine_config_problem", pid), box.journal()[-3000:]
    box.wait_for(lambda: json.loads(box.sh("conjuringctl status --json").stdout).get("converged"), 60,
                 "the daemon to converge with the last good machine settings")
    time.sleep(3)  # a daemon that exits would be restarted by now (RestartSec=5s is the pace, not the proof)
    assert box.prop("conjuringd", "SubState") == "running" and box.prop("conjuringd", "MainPID") == pid
    assert int(box.prop("conjuringd", "NRestarts")) == restarts
    assert hub_id() == hub and health(HUB), "the hub keeps serving, untouched"
    assert HubSession(HUB).login(*student()) == 302
    box.sh("cp /root/conjuring.toml.good /etc/conjuring/conjuring.toml")  # fixed: re-read when saved
    box.wait_for(lambda: "error" not in box.prop("conjuringd", "StatusText"), 30, "STATUS= without the error")
    assert "machine:" not in box.sh("conjuringctl status").stdout
    assert box.prop("conjuringd", "MainPID") == pid and hub_id() == hub


def test_reload_replans_without_restarting(box):
    pid, hub = box.prop("conjuringd", "MainPID"), hub_id()
    before = max(pass_ids(box, pid=pid), default=0)
    started = time.monotonic()
    box.sh("systemctl reload conjuringd")
    reloads = box.wait_for(lambda: [i for i in pass_ids(box, "reload: SIGHUP", pid) if i > before], 30,
                           "a reload pass in the journal")
    box.stage("systemctl reload -> reload pass", started)
    assert reloads
    assert box.prop("conjuringd", "MainPID") == pid
    assert box.prop("conjuringd", "ActiveState") == "active"
    assert hub_id() == hub and health(HUB)


def test_restart_keeps_the_hub_container(box):
    pid, hub = box.prop("conjuringd", "MainPID"), hub_id()
    ready_before = len(journal_lines(box, "ready"))
    started = time.monotonic()
    box.sh("systemctl restart conjuringd")
    box.stage("systemctl restart (until READY=1)", started)
    assert box.prop("conjuringd", "SubState") == "running"
    assert box.prop("conjuringd", "MainPID") != pid
    assert len(journal_lines(box, "ready")) == ready_before + 1
    assert box.sh("conjuringctl status").returncode == 0
    box.wait_for(lambda: json.loads(box.sh("conjuringctl status --json").stdout).get("converged"), 60,
                 "the restarted daemon to converge")
    assert hub_id() == hub and health(HUB)


def test_watchdog_restarts_a_frozen_daemon_while_the_hub_serves(box):
    box.write(f"{DROPIN}/20-watchdog.conf", "[Service]\nWatchdogSec=3s\nTimeoutAbortSec=5s\n")
    box.sh("systemctl daemon-reload && systemctl restart conjuringd")
    pid = box.prop("conjuringd", "MainPID")
    restarts = int(box.prop("conjuringd", "NRestarts"))
    time.sleep(4)  # the daemon keeps a 3 s watchdog happy while it runs
    assert box.prop("conjuringd", "MainPID") == pid, "restarted although it was pinging"
    hub, answers = hub_id(), []
    started = time.monotonic()
    box.sh(f"kill -STOP {pid}")

    def restarted():
        answers.append(health(HUB, timeout=2))
        return (box.prop("conjuringd", "MainPID") not in (pid, "0")
                and box.prop("conjuringd", "SubState") == "running")

    box.wait_for(restarted, 30, "systemd to restart the daemon")
    box.stage("kill -STOP -> watchdog restart -> running", started)
    assert answers and all(answers), f"the hub stopped answering: {answers}"
    assert hub_id() == hub
    assert int(box.prop("conjuringd", "NRestarts")) == restarts + 1
    assert "Watchdog timeout" in box.journal()
    box.sh(f"rm {DROPIN}/20-watchdog.conf && systemctl daemon-reload && systemctl restart conjuringd")


def test_apply_a_folder_from_tmp(box):
    """The unit keeps /tmp shared (no PrivateTmp=): `conjuringctl apply /tmp/x` works."""
    box.sh("rm -rf /tmp/custom && cp -r /etc/conjuring/custom /tmp/custom && "
           "printf 'newstudent,a-long-password\\n' >> /tmp/custom/users.csv")
    users_before = box.wait_for(lambda: (s := json.loads(box.sh("conjuringctl status --json").stdout))
                                .get("converged") and s.get("users"), 60, "a converged status")
    result = box.sh("conjuringctl apply /tmp/custom", check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    status = box.wait_for(lambda: (s := json.loads(box.sh("conjuringctl status --json").stdout))
                          .get("users") == users_before + 1 and s.get("converged") and s, 60, "the applied users")
    assert status["active_source"]["path"] == "/tmp/custom"
    assert HubSession(HUB).login("newstudent", "a-long-password") == 302  # synced live


def test_reinstall_restarts_the_daemon_not_the_hub(box):
    """What an upgrade does: the postinst restarts the running daemon (not the hub)."""
    pid, hub = box.prop("conjuringd", "MainPID"), hub_id()
    started = time.monotonic()
    box.sh("apt-get install -y --reinstall --no-install-recommends /mnt/debs/conjuringd_*_all.deb 2>&1")
    box.stage("apt-get install --reinstall (restart)", started)
    assert box.prop("conjuringd", "SubState") == "running"
    assert box.prop("conjuringd", "MainPID") != pid
    assert hub_id() == hub and health(HUB)


def test_remove_stops_the_daemon_and_keeps_everything(box):
    started = time.monotonic()
    box.sh("apt-get remove -y conjuringd 2>&1")
    box.stage("apt-get remove", started)
    assert box.prop("conjuringd", "ActiveState") in ("inactive", "")
    assert health(HUB), "the hub keeps serving without its daemon"
    for kept in ("/etc/conjuring/conjuring.toml", "/etc/conjuring/custom/users.csv", f"{STATE}/state.json"):
        assert box.sh(f"test -e {kept}", check=False).returncode == 0, kept
    box.sh("apt-get install -y --no-install-recommends /mnt/debs/conjuringd_*_all.deb 2>&1")
    assert box.prop("conjuringd", "SubState") == "running"


def test_purge_keeps_student_homes(box):
    uids = box.sh(f"cat {STATE}/uids.json").stdout
    assert STUDENT_NAME in json.loads(uids)["users"]
    assert box.sh(f"test -e {STATE}/state.json -a -d {STATE}/configs").returncode == 0
    started = time.monotonic()
    purge = box.sh("apt-get purge -y conjuringd 2>&1")
    box.stage("apt-get purge", started)
    assert "never deleted" in purge.stdout and f"{STATE}/home" in purge.stdout
    assert box.sh(f"cat {STATE}/home/{STUDENT_NAME}/notes.txt").stdout == "my work"
    assert (STATE / "home" / STUDENT_NAME / "notes.txt").read_text() == "my work"  # seen from the host too
    assert box.sh(f"cat {STATE}/uids.json").stdout == uids
    for gone in (f"{STATE}/state.json", f"{STATE}/configs", f"{STATE}/secrets", "/etc/conjuring"):
        assert box.sh(f"test -e {gone}", check=False).returncode != 0, gone
    assert box.prop("conjuringd", "LoadState") == "not-found"
