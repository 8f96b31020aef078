"""Builds with the micromamba STAND-IN (tests/support/standin/micromamba) in place of the pinned download.

Conda channels and micromamba's download are not reachable from the test machine. `standin_render` wraps
conjuringd's renderer: the one step that downloads and checks micromamba becomes a COPY of the stand-in to
the same path, everything else is rendered as the product renders it (so the environment, kernel and
requirements steps run for real, against PyPI). Use it only with test configs: the image keeps its label.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from conjuringd.hub import dockerfile

STANDIN = Path(__file__).parent / "standin" / "micromamba"
COPY_STEP = "COPY standin/micromamba /usr/local/bin/micromamba"


def swap_download(rendered: dockerfile.Rendered) -> dockerfile.Rendered:
    """The rendered build with its micromamba download replaced by the stand-in (exactly one step)."""
    lines = rendered.dockerfile.splitlines()
    assert lines.count(dockerfile.MICROMAMBA_STEP) == 1, "the render has no (or more than one) micromamba download"
    lines[lines.index(dockerfile.MICROMAMBA_STEP)] = COPY_STEP  # one step for one: sections keep their numbers
    files = rendered.files + (("standin/micromamba", STANDIN.read_bytes(), 0o755),)
    return dataclasses.replace(rendered, dockerfile="\n".join(lines) + "\n", files=files)


def standin_render(*args, **kwargs) -> dockerfile.Rendered:
    return swap_download(dockerfile.render(*args, **kwargs))
