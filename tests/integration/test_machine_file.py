"""The real conjuringd with a broken /etc/conjuring/conjuring.toml: it keeps running and says so.

Before, one typo in the machine file made the daemon exit at boot while it enumerated the
block devices (the USB policy was read through the active configuration, which the broken
file made invalid), and systemd's Restart=on-failure repeated that for ever.
"""

from __future__ import annotations

import os

import pytest

from tests.support.daemon import Daemon

BROKEN = '[hub]\nidle_timeout = 600\nmem_limit = "1 GB"\n'


@pytest.fixture
def daemon(tmp_path):
    # --usb udev: the stick adapter reads the USB policy while it lists the block devices at start
    d = Daemon(tmp_path, args=["--hub", "none", "--network", "none", "--usb", "udev"])
    yield d
    d.close()


def save(path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_broken_machine_file_at_boot_leaves_the_daemon_running_with_the_problem_shown(daemon):
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text(BROKEN)
    daemon.start()
    assert daemon.notify.wait_for(lambda m: m == "READY=1", timeout=20), daemon.log_path.read_text()[-3000:]
    daemon.wait_event("converged", timeout=30)
    status = daemon.wait_status(lambda s: s.get("machine_error") and s.get("active_config"))
    assert "has 1 error(s): running with the default machine settings" in status["machine_error"]
    out = daemon.ctl("status").stdout
    assert "machine:  " in out and 'mem_limit: "1 GB" is not a size like "512M" or "2G"' in out, out
    assert "configuration" in out.splitlines()[0], "the local configuration is active all the same"
    assert daemon.notify.wait_for(lambda m: m.startswith("STATUS=") and "has 1 error(s)" in m, timeout=5)
    problems = [e["problem"] for e in daemon.events("machine_config_problem")]
    assert any("conjuring.toml:3: error" in p and "mem_limit" in p for p in problems), problems
    assert daemon.proc.poll() is None

    save(daemon.config_dir / "conjuring.toml", "[hub]\nidle_timeout = 600\n")  # fixed: re-read, error gone
    daemon.wait_event("machine_config_fixed", timeout=20)
    daemon.wait_status(lambda s: not s.get("machine_error"))
    assert "machine:" not in daemon.ctl("status").stdout
    assert daemon.notify.wait_for(lambda m: m.startswith("STATUS=") and "error" not in m, timeout=5)


def test_breaking_the_machine_file_while_running_keeps_the_last_good_settings(daemon):
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text("[usb]\nmax_files = 123\n")
    daemon.start()
    daemon.wait_event("converged", timeout=30)
    assert (daemon.state_dir / "machine-good.toml").read_text() == "[usb]\nmax_files = 123\n"
    save(daemon.config_dir / "conjuring.toml", "[usb]\nmax_files = 'lots'\n")
    status = daemon.wait_status(lambda s: s.get("machine_error"), timeout=20)
    assert "running with the last good machine settings" in status["machine_error"]
    daemon.stop()  # and a restart with the file still broken starts just the same
    assert daemon.proc.returncode == 0
    daemon.start()
    status = daemon.wait_status(lambda s: s.get("machine_error") and s.get("pid") == daemon.proc.pid, timeout=30)
    assert "last good" in status["machine_error"] and daemon.proc.poll() is None
    assert (daemon.state_dir / "machine-good.toml").read_text() == "[usb]\nmax_files = 123\n"
