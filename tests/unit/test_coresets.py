"""The hub's core sets: which one a base's Python gets, and what the build context carries (issue 13, item 5)."""

from __future__ import annotations

import subprocess
import sys

from conjuringd.config import bases
from conjuringd.hub import coresets
from conjuringd.hub.dockerfile import CORE_PACKAGES, render
from tests.support.hubconfig import make_config


def _chosen(python: str) -> str:
    """What the build's snippet picks when `python` is the base's python3 (a shell function stands in for PATH)."""
    script = f"python3() {{ {python} \"$@\"; }}; {coresets.choose_command()} && echo $core"
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_the_minimum_is_the_oldest_set_and_validate_says_so():
    assert coresets.MIN_PYTHON == (3, 9) == bases.MIN_PYTHON
    assert bases.check_base("debian:bullseye") == "" and bases.check_base("python:3.9-slim") == ""
    assert "has Python 3.8, but the hub needs Python 3.9 or newer" in bases.check_base("ubuntu:20.04")


def test_this_python_gets_the_newest_set_and_the_default_base_is_unchanged():
    assert sys.version_info[:2] >= (3, 10)
    assert _chosen(sys.executable) == "py3.10"
    assert CORE_PACKAGES == coresets.CURRENT.packages and "jupyterhub==6.1.1" in CORE_PACKAGES
    assert coresets.CURRENT.apt == ("node-configurable-http-proxy",) and not coresets.CURRENT.pip


def test_python_39_gets_the_last_releases_that_support_it(tmp_path):
    fake = tmp_path / "py39"  # a python3 that reports 3.9 and runs the snippet's code with the real interpreter
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c \"import sys; sys.version_info = (3, 9, 2, 'final', 0); "
                    "exec(sys.argv[1])\" \"$2\"\n")
    fake.chmod(0o755)
    assert _chosen(str(fake)) == "py3.9"
    pins = dict(pin.split("==") for pin in coresets.PY39.packages)
    assert pins["jupyterhub"].startswith("5.") and pins["jupyterlab"].startswith("4.5.") and pins["notebook"].startswith("7.5.")
    assert "configurable-http-proxy" in pins and coresets.PY39.apt == ()  # bullseye has no node proxy
    assert all("==" in pin for s in coresets.SETS for pin in s.packages) and coresets.PY39.pip.startswith("pip==")


def test_the_context_carries_every_set_and_the_build_copies_the_chosen_pins(tmp_path):
    rendered = render(make_config(tmp_path), "h")
    files = {path: data for path, data, _ in rendered.files}
    for s in coresets.SETS:
        assert files[f"core/{s.name}.txt"].decode().split() == list(s.packages)
        assert files[f"core/{s.name}.apt"].decode() == " ".join(s.apt)
    text = rendered.dockerfile
    assert "COPY core/ /opt/conjuring/core/" in text
    assert f"cp /opt/conjuring/core/$core.txt {coresets.CHOSEN}" in text
    assert f"-r {coresets.CHOSEN}" in text and "$(cat /opt/conjuring/core/$core.apt)" in text
    # the choice comes after the base's Python check, inside the core layer
    assert text.index(bases.MARKER) < text.index("COPY core/") > text.index("# --- layer: core")
