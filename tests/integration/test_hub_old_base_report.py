"""A too-old base through the daemon's own reconciler and a real dockerd: the one line is on the status and
on the stick's report, and the hub that was serving keeps serving (issue 13, item 5).

The too-old base is tests/support/oldbase.py's stand-in for ubuntu:18.04 (Python 3.6, unreachable here).
One hub of its own (the bullseye test's container name and port; the modules run one after the other).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from conjuringd.adapters.docker import DockerHub
from conjuringd.adapters.hub_http import health
from conjuringd.paths import Paths
from conjuringd.reconcile.execute import Adapters, PassLog
from conjuringd.reconcile.loop import Reconciler
from conjuringd.reconcile.model import ImportOutcome
from conjuringd.reconcile.triggers import Heartbeat, Triggers
from conjuringd.status import StatusBoard
from conjuringd.sticks.report import StickReport, render_report
from conjuringd.store import SnapshotStore
from tests.support.docker import require_docker
from tests.support.hubconfig import PROXY_CA
from tests.support.hubworld import login, remove_hub_containers
from tests.support.oldbase import UNKNOWN_OLD, ensure_standin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-bullseye", 18984
BASE = f"http://127.0.0.1:{PORT}"
REPO_CUSTOM = Path(__file__).resolve().parents[2] / "custom"
LINE = (f"base image {UNKNOWN_OLD} has Python 3.6, but the hub needs Python 3.9 or newer: use FROM debian:bookworm "
        'in base.Dockerfile (or [hub] base_image = "debian:bookworm")')


class _Quiet:
    def notify(self, state):
        pass


@pytest.fixture
def reconciler(tmp_path):
    require_docker()
    remove_hub_containers(NAME)
    paths = Paths(state_dir=tmp_path / "state", config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run")
    shutil.copytree(REPO_CUSTOM, paths.local_custom)
    toml = paths.local_custom / "conjuring.toml"
    toml.write_text(toml.read_text() + f"\n[hub]\nport = {PORT}\nhealth_timeout = 150\n")
    (paths.local_custom / "certs").mkdir(exist_ok=True)  # this machine's TLS proxy, as a school's (certs/ feature)
    shutil.copy(PROXY_CA, paths.local_custom / "certs" / "host-ca.crt")
    (paths.local_custom / "users.csv").write_text("name,password,admin\nalice,alice-pw-1\nteacher,teacher-pw-1,yes\n")
    hub = DockerHub(paths, container_name=NAME)
    yield paths, hub, Reconciler(SnapshotStore(paths), Adapters(hub=hub), StatusBoard(paths.status_file, _Quiet()),
                                 Triggers(quiet=0.01), Heartbeat(), hub_enabled=True)
    asyncio.run(hub.close())
    remove_hub_containers(NAME)


async def test_the_one_line_is_on_the_report_and_the_serving_hub_stays(reconciler):
    paths, hub, daemon = reconciler
    await daemon.run_pass(("startup",))
    serving = (await hub.observe()).container
    assert serving and serving.running and health(BASE), paths.status_file.read_text()
    ensure_standin()
    (paths.local_custom / "base.Dockerfile").write_text(f"# the original's main branch had FROM ubuntu:18.04\nFROM {UNKNOWN_OLD}\n")
    await daemon.run_pass(("local: edit",))
    changes = daemon.status.get("changes")
    assert any("image build FAILED at step 3/" in c and c.endswith(f"(base): {LINE}; the previous hub keeps serving")
               for c in changes), changes
    failed = daemon.store.state.read().failed_builds  # what the daemon recorded of the failed build
    assert [f["tail"] for f in failed.values()] == [[LINE]], failed
    # the stick's REPORT.txt is rendered from these facts (Executor -> sticks.write_report)
    facts = await daemon._report_facts(PassLog(changes=list(changes), build_tail=(LINE,)))
    text = render_report(StickReport("t", "box", "/dev/sdz1", "STICK", "U", ImportOutcome("applied", "c" * 64), facts))
    assert text.count(LINE) == 2 and "Hub: build failed" in text, text
    after = (await hub.observe()).container
    assert after.id == serving.id and after.running and health(BASE)
    login("alice", "alice-pw-1", BASE)
