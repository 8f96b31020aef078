"""An older Debian base for real: `[hub] base_image = "debian:bullseye"` (Python 3.9) against a real dockerd
(issue 13, item 5).

Docker Hub is unreachable here, so the pull fails and the daemon's own mmdebstrap bootstrap makes
local/debian:bullseye from the Debian mirror (or reuses it). The build picks the core set for Python 3.9
(conjuringd.hub.coresets); a student logs in over HTTP and a kernel runs a cell on bullseye's Python.
One hub of its own (container name and port below).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess

import pytest

from conjuringd.adapters.hub_http import health
from conjuringd.hub import coresets
from conjuringd.reconcile.model import ReplaceContainer
from tests.support.docker import DOCKER, image_exists, require_docker
from tests.support.hubconfig import replace
from tests.support.hubworld import World, container_logs, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME, PORT = "conjuring-bullseye", 18984
BASE = f"http://127.0.0.1:{PORT}"


def in_hub(*command: str, user: str = "root") -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, "exec", "-u", user, NAME, *command], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_docker()
    remove_hub_containers(NAME)
    w = World(tmp_path_factory.mktemp("bullseye"), name=NAME, port=PORT)
    settings = w.config.settings
    w.config = replace(w.config, settings=dataclasses.replace(
        settings, hub=dataclasses.replace(settings.hub, base_image="debian:bullseye")))
    yield w
    asyncio.run(w.hub.close())
    remove_hub_containers(NAME)


async def test_bullseye_builds_with_the_python_39_core_and_serves(world):
    done = await world.converge()
    assert done[-1] is ReplaceContainer, done
    assert image_exists("local/debian:bullseye")  # the pull failed; the bootstrapped Debian 11 is the base
    assert health(BASE)
    os_release = in_hub("cat", "/etc/debian_version").stdout
    assert os_release.startswith("11."), os_release
    frozen = in_hub("/opt/conjuring/venv/bin/pip", "freeze").stdout.lower().split()
    for pin in coresets.PY39.packages:
        assert pin.lower() in frozen, (pin, frozen)
    assert in_hub("cat", coresets.CHOSEN).stdout.split() == list(coresets.PY39.packages)
    assert "lark" not in " ".join(frozen)  # CORE_UNUSED went here too
    top = in_hub("ps", "-eo", "args").stdout
    assert "configurable-http-proxy" in top and "-m conjuring_forkserver" in top, top


async def test_a_student_logs_in_and_a_kernel_runs_on_python_39(world):
    alice = login("alice", "alice-pw-1", BASE)
    kernel = start_kernel(alice, "alice")
    out = execute(alice, "alice", kernel, "import sys, os, json\n"
                  "print(json.dumps({'v': '%d.%d' % sys.version_info[:2], 'exe': sys.executable, 'user': os.getuid()}))",
                  timeout=120)
    seen = json.loads(out)
    assert seen["v"] == "3.9" and seen["exe"].startswith("/opt/conjuring/venv/"), seen
    assert seen["user"] == int(in_hub("id", "-u", "alice").stdout), seen
    logs = container_logs(name=NAME)
    # conjuringd's own runtime works on jupyterhub 5.5: the queued spawner forked her server from the fork server
    assert re.search(r"Forked the server of alice from the fork server: pid \d+, port \d+", logs), logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]


async def test_the_first_run_lab_extension_is_enabled_on_jupyterlab_45(world):
    listing = in_hub("/opt/conjuring/venv/bin/jupyter", "labextension", "list")
    text = listing.stdout + listing.stderr
    line = next((each for each in text.splitlines() if "@conjuring/first-run" in each), "")
    assert "enabled" in line and "OK" in line, text


CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def test_in_the_browser_the_first_shift_enter_runs_on_python_39(world):
    """bob logs in with Chromium and runs a saved notebook's cell at once: JupyterLab 4.5 runs it through the
    @conjuring/first-run executor (its own cell executor is disabled), so no output means the extension failed."""
    from playwright.sync_api import sync_playwright

    bob = login("bob", "bob-pw-1", BASE)
    assert bob.wait_lab("bob", 240) == 200
    notebook = {"cells": [{"cell_type": "code", "source": "import sys\nprint('python', '%d.%d' % sys.version_info[:2])",
                           "metadata": {}, "outputs": [], "execution_count": None}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    status, _, body = bob.request("PUT", "/user/bob/api/contents/version.ipynb",
                                  {"type": "notebook", "format": "json", "content": notebook})
    assert status in (200, 201), body[:300]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(240_000)
            page.goto(f"{BASE}/hub/login")
            page.fill("input[name=username]", "bob")
            page.fill("input[name=password]", "bob-pw-1")
            page.click("#login_submit")
            page.wait_for_url(re.compile("/user/bob/lab"))
            page.goto(f"{BASE}/user/bob/lab/tree/version.ipynb")
            cell = page.locator(".jp-NotebookPanel .jp-CodeCell").first
            cell.locator(".cm-content").click()
            page.keyboard.press("Shift+Enter")
            cell.locator(".jp-OutputArea-output").first.wait_for()
            assert cell.locator(".jp-OutputArea").inner_text().strip() == "python 3.9"
        finally:
            browser.close()
