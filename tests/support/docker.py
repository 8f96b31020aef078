"""Fixture helpers for tests against a real dockerd (RECIPES.md, Docker Engine).

`ensure_dockerd()` starts dockerd in the background when its socket does not
answer; `ensure_base_image()` bootstraps `local/debian:bookworm` with
mmdebstrap once and reuses it under that fixed tag afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SOCKET = Path("/var/run/docker.sock")
DOCKERD_LOG = Path("/var/log/dockerd.log")
BASE_TAG = "local/debian:bookworm"
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


class Unavailable(Exception):
    """Docker cannot be had here (not root, not installed)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def socket_answers(path: Path = SOCKET) -> bool:
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in s.recv(200)
    except OSError:
        return False


def ensure_dockerd(timeout: float = 60) -> None:
    """Start dockerd (logging to DOCKERD_LOG) unless its socket answers already."""
    if socket_answers():
        return
    if os.geteuid() != 0:
        raise Unavailable("dockerd is not running and starting it needs root")
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        raise Unavailable("dockerd is not installed (apt-get install docker.io)")
    with open(DOCKERD_LOG, "ab") as log:
        subprocess.Popen([dockerd], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket_answers():
            return
        time.sleep(0.2)
    raise Unavailable(f"dockerd did not answer within {timeout}s (see {DOCKERD_LOG})")


def image_exists(tag: str) -> bool:
    return subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True).returncode == 0


def ensure_base_image(tag: str = BASE_TAG) -> str:
    """Bootstrap the Debian base with mmdebstrap, once; later calls reuse the tag."""
    ensure_dockerd()
    if image_exists(tag):
        return tag
    # the product's own bootstrap (RECIPES.md's mmdebstrap pipeline, with pipefail)
    from conjuringd.adapters.docker_build import bootstrap

    ok, tail = bootstrap(tag.rsplit(":", 1)[1], tag)
    if not ok or not image_exists(tag):
        print("\n".join(tail))
        raise Unavailable(f"mmdebstrap did not produce {tag}")
    return tag


def require_docker() -> None:
    """For fixtures: make dockerd and the base image available, else skip (fail in CI)."""
    import pytest

    try:
        ensure_dockerd()
        ensure_base_image()
    except (Unavailable, subprocess.CalledProcessError) as exc:
        if in_ci():
            pytest.fail(f"docker unavailable in CI: {exc}")
        pytest.skip(f"docker unavailable: {exc}")


# Docker Hub is unreachable here; Ubuntu's own archive is not. A base named `ubuntu:<release>` is made the way
# the Debian base is, with mmdebstrap, from archive.ubuntu.com (main + universe), and imported under that tag,
# labelled so nobody takes it for Docker Hub's. Debian 12 has no Ubuntu keyring package: the sources are
# marked [trusted=yes] (test images only).
UBUNTU_SUITES = {"ubuntu:22.04": "jammy"}
UBUNTU_LABEL = "org.conjuring.test-base=mmdebstrap-from-archive.ubuntu.com"  # not Docker Hub's image


def ubuntu_script(suite: str, tag: str) -> str:
    sources = " ".join(f"'deb [trusted=yes] http://{host}/ubuntu {dist} main universe'" for host, dist in
                       (("archive.ubuntu.com", suite), ("archive.ubuntu.com", f"{suite}-updates"),
                        ("security.ubuntu.com", f"{suite}-security")))
    return (
        "set -o pipefail\n"
        "mmdebstrap --variant=minbase --include=apt --mode=root --format=tar "
        "--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' "
        "--aptopt='Acquire::Languages \"none\"' "
        "--customize-hook='rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/archives/*.deb' "
        f"{suite} - {sources} "
        f"| {DOCKER} import --change 'ENV LANG=C.UTF-8' --change 'LABEL {UBUNTU_LABEL}' - {tag}\n"
    )


def ensure_ubuntu_image(tag: str = "ubuntu:22.04") -> str:
    """`tag` present (pulled earlier, or bootstrapped here once: about 40 s), else Unavailable."""
    ensure_dockerd()
    if image_exists(tag):
        return tag
    # its own session: mmdebstrap that fails signals its whole process group (SIGHUP), which would end pytest
    done = subprocess.run(["bash", "-c", ubuntu_script(UBUNTU_SUITES[tag], tag)], capture_output=True, text=True,
                          start_new_session=True)
    if done.returncode != 0 or not image_exists(tag):
        print((done.stdout + done.stderr)[-3000:])
        raise Unavailable(f"mmdebstrap did not produce {tag}")
    return tag


def require_ubuntu_image(tag: str = "ubuntu:22.04") -> str:
    """For fixtures: ensure_ubuntu_image, else skip (fail in CI)."""
    import pytest

    try:
        return ensure_ubuntu_image(tag)
    except Unavailable as exc:
        if in_ci():
            pytest.fail(f"{tag} unavailable in CI: {exc}")
        pytest.skip(f"{tag} unavailable: {exc}")
