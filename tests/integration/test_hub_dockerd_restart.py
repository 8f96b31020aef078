"""A dockerd that goes away and comes back: the adapter reports TransientError, then recovers by itself.

Uses a second, private dockerd (own socket, data-root, exec-root and network
namespace) so the machine's main dockerd, and whatever else uses it, is never
disturbed. (Never give a second dockerd `--bridge none` in the host's network
namespace: it deletes the host's docker0.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import docker
import pytest

from conjuringd.adapters.docker import DockerHub
from conjuringd.config.problems import TransientError
from conjuringd.paths import Paths
from tests.support.docker import BASE_TAG, DOCKER, in_ci, require_docker, socket_answers

pytestmark = pytest.mark.docker


class PrivateDockerd:
    def __init__(self, root: Path):
        self.root = root
        self.sock = root / "docker.sock"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["unshare", "--net", shutil.which("dockerd") or "/usr/sbin/dockerd", "-H", f"unix://{self.sock}",
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "--iptables=false", "--ip-masq=false"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not socket_answers(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd did not start: {(self.root / 'dockerd.log').read_text()[-500:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.proc = None


@pytest.fixture
def private_dockerd():
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        if in_ci():
            pytest.fail("needs root and dockerd in CI")
        pytest.skip("needs root and dockerd")
    root = Path(f"/tmp/conjuring-dockerd-{os.getpid()}")  # short: the socket path must fit sun_path
    root.mkdir(exist_ok=True)
    daemon = PrivateDockerd(root)
    daemon.start()
    yield daemon
    daemon.stop()
    shutil.rmtree(root, ignore_errors=True)


def _run_labelled_container(sock: Path) -> str:
    """A stand-in hub: our labels, restart policy unless-stopped, on the bootstrapped base."""
    save = subprocess.Popen([DOCKER, "save", BASE_TAG], stdout=subprocess.PIPE)
    subprocess.run([DOCKER, "-H", f"unix://{sock}", "load"], stdin=save.stdout, check=True, capture_output=True)
    assert save.wait() == 0
    return subprocess.run(
        [DOCKER, "-H", f"unix://{sock}", "run", "-d", "--name", "conjuring", "--init", "--restart", "unless-stopped",
         "--label", "org.conjuring.image=restart-test", "--label", "org.conjuring.restart=r1", BASE_TAG, "sleep", "infinity"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def _import_labelled_image(sock: Path) -> None:
    """A tiny image carrying our label, made from an empty rootfs (no registry needed)."""
    empty = subprocess.run(["tar", "-c", "-T", "/dev/null"], capture_output=True, check=True).stdout
    subprocess.run([DOCKER, "-H", f"unix://{sock}", "import", "--change", "LABEL org.conjuring.image=restart-test",
                    "-", "conjuring/hub:restart-test"], input=empty, check=True, capture_output=True)


async def test_adapter_recovers_after_dockerd_restart(private_dockerd, tmp_path):
    sock = private_dockerd.sock
    hub = DockerHub(Paths(state_dir=tmp_path / "state"),
                    client_factory=lambda: docker.DockerClient(base_url=f"unix://{sock}", version="auto"))
    try:
        _import_labelled_image(sock)
        assert (await hub.observe()).images == frozenset({"restart-test"})
        private_dockerd.stop()
        with pytest.raises(TransientError):
            await hub.observe()
        with pytest.raises(TransientError):
            await hub.observe()  # still down: still transient, never a crash
        private_dockerd.start()
        observed = await hub.observe()  # the same adapter, not restarted
        assert observed.images == frozenset({"restart-test"}) and observed.container is None
    finally:
        await hub.close()


async def test_hub_container_comes_back_with_dockerd(private_dockerd, tmp_path):
    require_docker()  # for the base image
    sock = private_dockerd.sock
    container_id = _run_labelled_container(sock)
    hub = DockerHub(Paths(state_dir=tmp_path / "state"),
                    client_factory=lambda: docker.DockerClient(base_url=f"unix://{sock}", version="auto"))
    try:
        before = (await hub.observe()).container
        assert before.id == container_id and before.running and before.restart_hash == "r1"
        private_dockerd.stop()
        with pytest.raises(TransientError):
            await hub.observe()
        private_dockerd.start()
        deadline = time.monotonic() + 30
        while not (after := (await hub.observe()).container).running and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert after.id == container_id and after.running  # restart policy: no action needed
    finally:
        await hub.close()
