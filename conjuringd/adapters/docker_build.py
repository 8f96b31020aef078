"""Blocking image work for the docker adapter: base image resolution and the streamed build.

Runs inside the adapter's single-thread executor, never on the event loop.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import docker.errors
import structlog

from conjuringd.adapters.docker_labels import (
    LABEL_IMAGE,
    BuildProgress,
    bootstrap_suite,
    image_tag,
    mmdebstrap_script,
)
from conjuringd.config.bases import MARKER
from conjuringd.config.problems import BuildFailed
from conjuringd.hub.dockerfile import DEFAULT_BASE, Rendered, base_image
from conjuringd.reconcile.model import Desired

log = structlog.get_logger(__name__)

BOOTSTRAP_TAG = "local/debian:{suite}"


def _exists(client, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def resolve_base(client, desired: Desired) -> str:
    """A local image to build FROM: present, else pulled, else bootstrapped with mmdebstrap."""
    name = base_image(desired.config)
    suite = bootstrap_suite(name)
    local = BOOTSTRAP_TAG.format(suite=suite) if suite else ""
    for candidate in (name, local if name == DEFAULT_BASE else ""):
        if candidate and _exists(client, candidate):
            return candidate
    try:
        log.info("base_image_pull", image=name)
        repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "latest")
        client.images.pull(repo, tag=tag)
        return name
    except docker.errors.APIError as exc:
        reason = str(exc).splitlines()[0][:200]
    settings = desired.config.settings.hub
    if not settings.bootstrap_base or not suite:
        raise BuildFailed(desired.hashes.image, "base", (f"cannot pull base image {name}: {reason}",))
    if _exists(client, local):  # bootstrapped before: the same suite again, and the layers built on it stay valid
        log.warning("base_image_local", image=name, tag=local, reason=f"pull failed ({reason}), using the bootstrapped image")
        return local
    log.warning("base_image_bootstrap", image=name, tag=local, suite=suite, reason="pull failed, bootstrapping Debian locally with mmdebstrap")
    ok, tail = bootstrap(suite, local)
    if not ok or not _exists(client, local):
        raise BuildFailed(desired.hashes.image, "base (mmdebstrap bootstrap)", tail)
    return local


def bootstrap(suite: str, tag: str) -> tuple[bool, tuple[str, ...]]:
    """mmdebstrap a minimal Debian `suite` from the apt mirror and import it as `tag`."""
    docker_bin = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker") or "docker"
    started = time.monotonic()
    # its own session: a failing mmdebstrap sends SIGHUP to its whole process group, the daemon's otherwise
    proc = subprocess.run(["bash", "-c", mmdebstrap_script(suite, tag, docker_bin)], capture_output=True, text=True,
                          start_new_session=True)
    tail = tuple((proc.stdout + proc.stderr).splitlines()[-20:])
    if proc.returncode != 0:
        log.error("base_image_bootstrap_failed", tag=tag, code=proc.returncode, tail=tail[-3:])
        return False, tail
    log.info("base_image_bootstrapped", tag=tag, seconds=round(time.monotonic() - started, 1))
    return True, tail


def build(client, desired: Desired, rendered: Rendered, progress: Callable[[str], None]) -> BuildProgress:
    """Stream a classic-builder build of `rendered`; raise BuildFailed with the failing step."""
    image_hash = desired.hashes.image
    state = BuildProgress()
    step_started = time.monotonic()
    stream = client.api.build(
        fileobj=io.BytesIO(rendered.context_tar()),
        custom_context=True,
        tag=image_tag(image_hash),
        labels={LABEL_IMAGE: image_hash},
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    for chunk in stream:
        previous = (state.step, state.command)
        started = state.feed(chunk)
        if started is None:
            continue
        if previous[0]:
            log.info("build_step_done", step=previous[0], seconds=round(time.monotonic() - step_started, 1),
                     cached=previous[0] in state.cached)
        step_started = time.monotonic()
        step, total, command = started
        log.info("build_step", step=step, total=total, layer=rendered.step_layer(step), command=command[:160])
        progress(f"building image: step {step}/{total}")
    if state.error or not _exists(client, image_tag(image_hash)):
        layer = rendered.step_layer(state.step) if state.step else "context"
        step = f"step {state.step}/{state.total} ({layer}): {state.command[:200]}"
        too_old = [line.strip()[len(MARKER):].strip() for line in state.tail if line.strip().startswith(MARKER)]
        if too_old:  # the base check's one line is the whole story (conjuringd.config.bases)
            log.error("build_failed", image=image_hash[:12], step=step, error=too_old[-1])
            raise BuildFailed(image_hash, f"step {state.step}/{state.total} (base): {too_old[-1]}", (too_old[-1],))
        log.error("build_failed", image=image_hash[:12], step=step, error=state.error[:300])
        raise BuildFailed(image_hash, step, tuple(state.tail[-20:]))
    return state
