"""Build the .deb once per test session (packaging/build-deb.sh), for the packaging and system tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = TOP / "packaging" / "build-deb.sh"
BUILD_TOOLS = ("dpkg-buildpackage", "dh", "dh_python3", "lintian")
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class Unbuildable(Exception):
    """The packaging tools are missing (the skip reason)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_tools() -> list[str]:
    return [tool for tool in BUILD_TOOLS if shutil.which(tool, path=CLEAN_PATH) is None]


def build_deb(out_dir: Path) -> tuple[Path, float]:
    """Run build-deb.sh into out_dir; returns the .deb and the seconds it took."""
    missing = missing_tools()
    if missing:
        raise Unbuildable(f"packaging tools missing: {', '.join(missing)} (bash .ci/install-deps.sh)")
    start = time.monotonic()
    result = subprocess.run(["bash", str(BUILD_SCRIPT), str(out_dir)], capture_output=True, text=True,
                            env={**os.environ, "PATH": CLEAN_PATH})
    if result.returncode != 0:
        raise AssertionError(f"build-deb.sh failed:\n{result.stdout}\n{result.stderr}")
    debs = sorted(out_dir.glob("conjuringd_*_all.deb"))
    assert len(debs) == 1, debs
    return debs[0], time.monotonic() - start


def require_or_skip(exc: Exception) -> None:
    """Skip outside CI, fail in CI (COMMON.md: CI skips nothing)."""
    import pytest

    if in_ci():
        pytest.fail(f"required in CI: {exc}")
    pytest.skip(str(exc))
