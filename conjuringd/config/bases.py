"""Base images whose Python is too old for the hub's pinned stack.

The hub's core (jupyterhub, jupyterlab, notebook) comes in pinned sets, the newest a base's Python runs
(`conjuringd.hub.coresets`: Python 3.10 gets the newest, 3.9 the last releases for it); a base
needs Python `MIN_PYTHON` or newer. A base image's `python3` is known here for the usual
Debian and Ubuntu tags and the official python images, so `conjuringctl validate` says so before
any build; for any other base the hub's first build step checks (`python_check_step`).
"""

from __future__ import annotations

import re

from conjuringd.hub import coresets

MIN_PYTHON = coresets.MIN_PYTHON  # the oldest Python any core set runs on (3.9)
FIX = "debian:bookworm"  # what conjuringd builds on by default
FIX_UBUNTU = "ubuntu:22.04"

# distribution release -> the python3 its archive ships
_DEBIAN = {"jessie": (3, 4), "8": (3, 4), "stretch": (3, 5), "9": (3, 5), "buster": (3, 7), "10": (3, 7),
           "bullseye": (3, 9), "11": (3, 9), "bookworm": (3, 11), "12": (3, 11), "trixie": (3, 13), "13": (3, 13)}
_UBUNTU = {"14.04": (3, 4), "trusty": (3, 4), "16.04": (3, 5), "xenial": (3, 5), "18.04": (3, 6), "bionic": (3, 6),
           "20.04": (3, 8), "focal": (3, 8), "22.04": (3, 10), "jammy": (3, 10), "24.04": (3, 12), "noble": (3, 12)}
_REGISTRY = re.compile(r"^(?:(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)/)?(?:library/)?")


def known_python(image: str) -> tuple[int, int] | None:
    """The python3 of a well-known image tag ("ubuntu:18.04", "debian:buster-slim", "python:3.9"), else None."""
    name = _REGISTRY.sub("", image.split("@", 1)[0].strip().lower())
    repo, _, tag = name.partition(":")
    if repo in ("debian", "local/debian"):
        release = re.split(r"[-.]", tag, maxsplit=1)[0]
        return _DEBIAN.get(release)
    if repo == "ubuntu":
        release = tag.split("-", 1)[0]
        return _UBUNTU.get(release) or _UBUNTU.get(".".join(release.split(".")[:2]))
    if repo == "python":
        match = re.match(r"(\d+)\.(\d+)", tag)
        return (int(match[1]), int(match[2])) if match else None
    return None


def fix_for(image: str) -> str:
    repo = _REGISTRY.sub("", image.lower()).split(":", 1)[0]
    return FIX_UBUNTU if repo == "ubuntu" else FIX


def too_old_message(image: str, have: str) -> str:
    """The one line a teacher reads: the base, its Python, the minimum and the fix."""
    need = ".".join(map(str, MIN_PYTHON))
    return (f"base image {image} has Python {have}, but the hub needs Python {need} or newer: "
            f"use FROM {fix_for(image)} in base.Dockerfile (or [hub] base_image = \"{fix_for(image)}\")")


def check_base(image: str) -> str:
    """The too-old line for a known tag, "" when it is new enough or not known."""
    have = known_python(image) if image else None
    if have is None or have >= MIN_PYTHON:
        return ""
    return too_old_message(image, f"{have[0]}.{have[1]}")


MARKER = "conjuring-base-check:"  # starts the line the build step prints; docker_build.py looks for it


def python_check_step(image: str) -> str:
    """A Dockerfile RUN that fails with the one line when the base's python3 is too old.

    python3 is installed from the base's own archive first when it has none (a minimal
    Debian or Ubuntu image). The check itself runs on any Python 3 (no f-strings)."""
    shown = re.sub(r"[^A-Za-z0-9._/:@+-]", "?", image)
    line = too_old_message(shown, "%d.%d").replace('"', '\\"')
    code = (f"import sys; v = sys.version_info[:2]; ok = v >= {MIN_PYTHON!r}; "
            f"ok or sys.stdout.write(\"{MARKER} {line}\\n\" % v); sys.exit(0 if ok else 1)")
    install = ("apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 >/dev/null "
               "&& rm -rf /var/lib/apt/lists/*")
    return f"RUN {{ command -v python3 >/dev/null || {{ {install}; }}; }} && python3 -c '{code}'"


__all__ = ["MARKER", "MIN_PYTHON", "check_base", "known_python", "python_check_step", "too_old_message"]
