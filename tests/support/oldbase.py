"""A base whose Python is too old, made here: a stand-in for ubuntu:18.04 (Python 3.6, unreachable here).

Debian bullseye from the Debian mirror (the daemon's own mmdebstrap bootstrap) whose python3 reports
itself as 3.6 through sitecustomize, under a tag no table of known bases has, so only the build's
first step can tell (conjuringd.config.bases.python_check_step).
"""

from __future__ import annotations

import subprocess

from tests.support.docker import DOCKER, image_exists

BULLSEYE = "local/debian:bullseye"
UNKNOWN_OLD = "conjuring-test/python36-standin:latest"
STANDIN = (f"FROM {BULLSEYE}\n"
           "RUN apt-get update && apt-get install -y --no-install-recommends python3-minimal && rm -rf /var/lib/apt/lists/*\n"
           "RUN printf 'import sys\\nsys.version_info = (3, 6, 9, \"final\", 0)\\n' > /usr/lib/python3.9/sitecustomize.py\n")


def ensure_standin() -> str:
    """Build the stand-in (bootstrapping bullseye first if needed) and check that it reports 3.6."""
    from conjuringd.adapters.docker_build import bootstrap

    if not image_exists(BULLSEYE):
        ok, tail = bootstrap("bullseye", BULLSEYE)
        assert ok and image_exists(BULLSEYE), "\n".join(tail)
    subprocess.run([DOCKER, "build", "-q", "-t", UNKNOWN_OLD, "-"], input=STANDIN, text=True, check=True, timeout=600)
    shown = subprocess.run([DOCKER, "run", "--rm", UNKNOWN_OLD, "python3", "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "(3, 6)", shown
    return UNKNOWN_OLD
