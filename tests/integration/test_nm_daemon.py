"""The real conjuringd process with --network nm against a real NetworkManager on a private bus."""

from __future__ import annotations

import pytest

from tests.support.daemon import Daemon
from tests.support.nm import NMClient, real_nm  # noqa: F401 - fixture

pytestmark = pytest.mark.nm


def serve_state(status: dict) -> str:
    return (status.get("network") or {}).get("state", "")


@pytest.fixture
def daemon(tmp_path, real_nm):  # noqa: F811
    root = tmp_path / "d"
    root.mkdir()
    d = Daemon(root, args=["--hub", "none", "--network", "nm", "--usb", "none"],
               env={"DBUS_SYSTEM_BUS_ADDRESS": real_nm.bus.address})
    d.config_dir.mkdir(parents=True)
    (d.config_dir / "conjuring.toml").write_text('[network]\nserve = "serve"\n')
    yield d
    d.close()


async def test_daemon_brings_up_serve_keeps_it_up_and_survives_networkmanager_restart(daemon, real_nm):  # noqa: F811
    daemon.start()
    status = daemon.wait_status(lambda s: serve_state(s) == "activated", timeout=30)
    assert status["network"]["serve"] == "serve"
    assert "http://10.77.0.1:8989" in status["hub_urls"]

    # someone deactivates it behind the daemon's back: a signal wakes the daemon, which brings it back
    async with NMClient(real_nm.bus.address) as client:
        await client.deactivate("serve")
    daemon.wait_event("action", action="activate network 'serve'", count=2, timeout=30)
    async with NMClient(real_nm.bus.address) as client:
        assert (await client.active())["serve"][1] == 2  # ACTIVATED

    # NetworkManager dies: logged, the daemon stays up; it comes back: re-converged without a daemon restart
    real_nm.kill_nm()
    daemon.wait_status(lambda s: s.get("network_error"), timeout=30)
    assert daemon.proc.poll() is None
    real_nm.start_nm()
    daemon.wait_status(lambda s: serve_state(s) == "activated" and not s.get("network_error"), timeout=60)
    assert daemon.proc.poll() is None
    assert len(daemon.events("ready")) == 1, "the daemon must not have restarted"
