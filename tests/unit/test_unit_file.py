"""The systemd unit: systemd-analyze accepts it, and it says what the daemon relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
UNIT = TOP / "systemd" / "conjuringd.service"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"

needs_analyze = pytest.mark.skipif(not Path(ANALYZE).exists(), reason="systemd-analyze is not installed")


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; repeated keys stay separate."""
    entries, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_entries(UNIT.read_text()) if s == section and k == key]


def verifiable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit, with ExecStart pointing at a stand-in when the daemon is not installed here."""
    text = UNIT.read_text() if text is None else text
    if not Path("/usr/bin/conjuringd").exists():
        stub = tmp_path / "conjuringd"
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        text = text.replace("ExecStart=/usr/bin/conjuringd", f"ExecStart={stub}")
    path = tmp_path / "conjuringd.service"
    path.write_text(text)
    return path


def verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, "verify", "--man=no", str(path)], capture_output=True, text=True)


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    result = verify(verifiable_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "conjuringd.service" not in result.stderr, result.stderr


@needs_analyze
def test_systemd_analyze_verify_rejects_a_broken_unit(tmp_path):
    broken = UNIT.read_text().replace("ExecReload=/bin/kill", "ExecReload=/nonexistent/kill")
    result = verify(verifiable_copy(tmp_path, broken))
    assert result.returncode != 0
    assert "/nonexistent/kill" in result.stderr


def exposure(path: Path) -> float:
    result = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(path)],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_analyze
def test_security_score_matches_the_documented_one(tmp_path):
    score = exposure(verifiable_copy(tmp_path))
    documented = re.search(r"systemd-analyze security.*\(systemd (\d+)\): ([0-9.]+)", UNIT.read_text())
    assert documented, "the unit documents its systemd-analyze security score"
    version = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True).stdout.split()[1]
    if version == documented.group(1):
        assert score == float(documented.group(2))
    assert score <= 4.0, f"exposure {score} (hardening was lost)"


@needs_analyze
def test_security_score_notices_lost_hardening(tmp_path):
    hardened = exposure(verifiable_copy(tmp_path))
    weakened = "\n".join(line for line in UNIT.read_text().splitlines()
                         if not line.startswith(("ProtectSystem=", "CapabilityBoundingSet=", "SystemCallFilter=")))
    assert exposure(verifiable_copy(tmp_path, weakened)) > hardened + 1.0


def test_notify_watchdog_and_restart():
    assert values("Type") == ["notify"]
    assert values("NotifyAccess") == ["main"]
    assert values("WatchdogSec") and values("WatchdogSec")[0] != "0"
    assert values("Restart") == ["on-failure"]
    assert values("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert values("ExecStart") == ["/usr/bin/conjuringd"]


def test_directories_and_group():
    for key in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert values(key) == ["conjuring"], key
    assert values("RuntimeDirectoryMode") == ["0750"]
    assert values("Group") == ["conjuring"]


def test_ordering_and_optional_networkmanager():
    wants = " ".join(values("Wants", "Unit")).split()
    after = " ".join(values("After", "Unit")).split()
    assert {"docker.service", "NetworkManager.service"} <= set(wants) & set(after)
    assert not values("Requires", "Unit") and not values("BindsTo", "Unit"), "must run without NetworkManager"
    assert values("WantedBy", "Install") == ["multi-user.target"]


def test_hardening_keeps_what_the_daemon_needs():
    caps = set(" ".join(values("CapabilityBoundingSet")).split())
    assert "CAP_SYS_ADMIN" in caps  # mount(2) of sticks
    assert "CAP_CHOWN" in caps  # student homes
    families = set(" ".join(values("RestrictAddressFamilies")).split())
    assert {"AF_UNIX", "AF_NETLINK"} <= families  # docker socket + system bus, udev monitor
    filters = " ".join(values("SystemCallFilter"))
    assert "@mount" in filters
    assert "PrivateDevices" not in {k for _, k, _ in unit_entries(UNIT.read_text())}
    allowed = " ".join(values("DeviceAllow"))
    for device in ("block-sd", "block-loop", "/dev/fuse"):
        assert device in allowed


def test_every_left_out_option_is_explained():
    text = UNIT.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for option in ("User=", "PrivateDevices=", "PrivateNetwork=", "PrivateUsers=", "ProcSubset=",
                   "PrivateTmp=", "ProtectHome=yes", "UMask=0027", "SystemCallFilter=~@privileged"):
        assert f"# - {option}" in comments, option
