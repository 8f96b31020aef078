"""Pure translations for the docker adapter: labels, observed state, build output, run-time specs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conjuringd.config.model import CustomConfig, HubSettings
from conjuringd.reconcile.model import ContainerState

CONTAINER_NAME = "conjuring"
PREVIOUS_NAME = "conjuring-previous"
IMAGE_REPO = "conjuring/hub"
LABEL_IMAGE = "org.conjuring.image"
LABEL_RESTART = "org.conjuring.restart"
LABEL_CONFIG = "org.conjuring.config"
LABEL_OWNER = "org.conjuring.owner"  # hashing.owner_digest of the state folder and hub token
PROBE_NAME = "conjuring-probe"
CONTAINER_PORT = 8000
BOOTSTRAP_SUITES = {
    "debian:bookworm": "bookworm",
    "debian:12": "bookworm",
    "local/debian:bookworm": "bookworm",
    "debian:trixie": "trixie",
    "debian:13": "trixie",
    "local/debian:trixie": "trixie",
    "debian:bullseye": "bullseye",  # Python 3.9: the hub's older core set (conjuringd.hub.coresets)
    "debian:11": "bullseye",
    "local/debian:bullseye": "bullseye",
}

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def image_tag(image_hash: str) -> str:
    return f"{IMAGE_REPO}:{image_hash}"


def container_labels(image_hash: str, restart_hash: str, config_hash: str, owner: str) -> dict[str, str]:
    return {LABEL_IMAGE: image_hash, LABEL_RESTART: restart_hash, LABEL_CONFIG: config_hash, LABEL_OWNER: owner}


def container_state(container_id: str, labels: dict, status: str, applied: dict, owner: str) -> ContainerState:
    """Observed state of the container named like ours.

    `applied` holds what was recorded for it (live hashes, whether it passed a health check);
    `owner` is this box's owner digest ('' when it has no hub token yet: nothing is ours then).
    """
    mine = applied.get(container_id, {})
    return ContainerState(
        id=container_id,
        image_hash=labels.get(LABEL_IMAGE, ""),
        restart_hash=labels.get(LABEL_RESTART, ""),
        running=status == "running",
        users_hash=mine.get("users", ""),
        files_hash=mine.get("files", ""),
        ours=bool(owner) and labels.get(LABEL_OWNER) == owner,
        checked=mine.get("checked") is True,
    )


def host_port(attrs: dict, default: int) -> int:
    """The host port bound to the hub's port in a container's inspect data, `default` when none is."""
    bindings = ((attrs.get("HostConfig") or {}).get("PortBindings") or {}).get(f"{CONTAINER_PORT}/tcp") or []
    for binding in bindings:
        try:
            return int(binding.get("HostPort") or "")
        except (TypeError, ValueError):
            continue
    return default


@dataclass
class BuildProgress:
    """Folds the classic builder's stream into steps, cache hits and a tail of output."""

    step: int = 0
    total: int = 0
    command: str = ""
    cached: list[int] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    error: str = ""
    tail_size: int = 40

    def feed(self, chunk: dict) -> "tuple[int, int, str] | None":
        """Consume one decoded chunk; return (step, total, command) when a new step starts."""
        if chunk.get("error") or chunk.get("errorDetail"):
            self.error = chunk.get("error") or chunk["errorDetail"].get("message", "")
            self._remember(self.error)
            return None
        text = chunk.get("stream") or ""
        started = None
        for line in text.splitlines():
            line = line.rstrip()
            if not line:
                continue
            self._remember(line)
            match = _STEP.match(line)
            if match:
                self.step, self.total, self.command = int(match[1]), int(match[2]), match[3]
                started = (self.step, self.total, self.command)
            elif line.strip() == "---> Using cache":
                self.cached.append(self.step)
        return started

    def _remember(self, line: str) -> None:
        self.tail.append(line)
        del self.tail[: -self.tail_size]


def hub_settings(hub: HubSettings) -> dict:
    """The run-time settings our jupyterhub_config.py reads (restart inputs only)."""
    return {
        "spawn_timeout": hub.spawn_timeout,
        "http_timeout": hub.http_timeout,
        "concurrent_spawn_limit": hub.concurrent_spawn_limit,
        "idle_timeout": hub.idle_timeout,
        "mem_limit": hub.mem_limit,
        "cpu_limit": hub.cpu_limit,
        "preload": list(hub.preload),
    }


def container_resources(hub: HubSettings) -> dict:
    """[hub] shm_size and gpus as docker SDK arguments (what the original's compose file set)."""
    from docker.types import DeviceRequest  # the daemon's library, imported where it is used
    from docker.utils import parse_bytes

    extra: dict = {}
    if hub.shm_size:
        extra["shm_size"] = parse_bytes(hub.shm_size)
    if hub.gpus:
        count = -1 if hub.gpus == "all" else int(hub.gpus)
        extra["device_requests"] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
    return extra


def users_spec(config: CustomConfig, uids: dict[str, int], probe: dict) -> dict:
    """The root-only users file handed to the container at run time."""
    return {
        "users": [{"name": u.name, "password": u.password, "admin": u.admin, "uid": uids[u.name]} for u in config.users],
        "probe": probe,
    }


def bootstrap_suite(image: str) -> str:
    """The Debian suite mmdebstrap can make in place of `image`, '' when it cannot."""
    return BOOTSTRAP_SUITES.get(image, "")


def mmdebstrap_script(suite: str, tag: str, docker: str = "docker") -> str:
    """A bash script that bootstraps a minimal Debian `suite` and imports it as `tag`."""
    security = f"{suite}-security"
    return (
        "set -o pipefail\n"
        "mmdebstrap --variant=minbase --mode=root --format=tar "
        "--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' "
        "--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' "
        "--aptopt='Acquire::Languages \"none\"' "
        "--customize-hook='rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/archives/*.deb' "
        f"{suite} - 'deb http://deb.debian.org/debian {suite} main' "
        f"'deb http://deb.debian.org/debian {suite}-updates main' "
        f"'deb http://deb.debian.org/debian-security {security} main' "
        f"| {docker} import --change 'ENV LANG=C.UTF-8' - {tag}\n"
    )
