"""Deterministic content digests of a configuration.

Three classes of input, as in DESIGN.md section 3:
- image: every input of the hub image, chained layer by layer from the one
  that changes least (base) to the one that changes most (runtime), so a
  layer's digest changes when it or anything below it changes;
- restart: inputs that need the hub restarted but no rebuild;
- live: users.csv and shared/ + home_default/, applied without a restart.
Digests cover contents and relative paths only: never mtimes, owners or the
order in which a folder was listed.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
from dataclasses import asdict
from pathlib import Path

from conjuringd.config.model import CustomConfig, FileTree
from conjuringd.reconcile.model import ConfigHashes

_SEP = b"\x00"


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def owner_digest(state_dir: str | os.PathLike[str], token: str) -> str:
    """Ties a hub container to one state folder and its hub token, without revealing the token.

    An HMAC keyed by the token over the state folder's resolved path: a container made from
    another state folder (other mounts, another token) never matches.
    """
    where = os.path.realpath(state_dir).encode()
    return hmac.new(token.encode(), b"conjuring hub owner\x00" + where, hashlib.sha256).hexdigest()


def tree_digest(tree: FileTree) -> str:
    return digest(*(f"{path}{_SEP.decode()}{sha}" for path, sha in sorted(tree.files)))


def folder_digest(root: str | os.PathLike[str]) -> str:
    """Digest of every regular file below `root` (paths and contents, sorted)."""
    root = Path(root)
    items = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
            items.append(f"{path.relative_to(root).as_posix()}\x00{file_sha256(path)}")
    return digest(*items)


def _renderer_digest() -> str:
    """What our own hub templates contribute: any change to them changes the image."""
    return folder_digest(Path(__file__).parent / "hub")


def image_layers(config: CustomConfig) -> tuple[tuple[str, str], ...]:
    """(layer name, chained digest) from base to runtime."""
    hub = config.settings.hub
    inputs: list[tuple[str, tuple[bytes | str, ...]]] = [
        ("base", (config.base_dockerfile, hub.base_image)),
        # certs before core, as the renderer builds them: the core's pip install
        # already goes through a school's TLS proxy, so a certs change rebuilds the core
        ("certs", tuple(part for name, pem in sorted(config.certs) for part in (name, pem))),
        ("core", ()),
        ("apt", tuple(sorted(config.apt_packages))),
        ("environment", (config.environment,)),
    ]
    for kernel in sorted(config.kernels, key=lambda k: k.name):
        inputs.append((f"kernel:{kernel.name}", (kernel.kind, kernel.content)))
    inputs.append(("requirements", (config.requirements,)))
    inputs.append(("runtime", (_renderer_digest(),)))
    layers, previous = [], ""
    for name, parts in inputs:
        previous = digest(previous, name, *parts)
        layers.append((name, previous))
    return tuple(layers)


# How the container is run beyond the settings (mounts and their options): a change here replaces
# containers made the old way once (e.g. homes mounted without nosuid,nodev before).
RUN_SPEC = "no-new-privileges"


def restart_digest(config: CustomConfig) -> str:
    hub = asdict(config.settings.hub)
    for key in ("base_image", "bootstrap_base", "keep_images", "prewarm", "prewarm_until", "health_timeout",
                "switch_idle", "switch_at"):
        hub.pop(key)  # these do not change the running hub
    return digest(config.hub_config, tree_digest(config.srv), repr(sorted(hub.items())), RUN_SPEC)


def users_digest(config: CustomConfig) -> str:
    return digest(*(f"{u.name}\x00{u.password}\x00{int(u.admin)}" for u in config.users))


def files_digest(config: CustomConfig) -> str:
    return digest(tree_digest(config.shared), tree_digest(config.home_default))


def config_hashes(config: CustomConfig, config_hash: str) -> ConfigHashes:
    layers = image_layers(config)
    return ConfigHashes(
        config=config_hash,
        image=layers[-1][1],
        layers=layers,
        restart=restart_digest(config),
        users=users_digest(config),
        files=files_digest(config),
    )


def changed_layers(old: tuple[tuple[str, str], ...], new: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """Names of the layers of `new` that must be rebuilt compared to `old`."""
    old_map = dict(old)
    return tuple(name for name, value in new if old_map.get(name) != value)


CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class StreamDigest:
    """The same value as `digest(*parts)`, with files streamed in as parts."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def part(self, data: bytes | str) -> None:
        data = data.encode() if isinstance(data, str) else data
        self._h.update(len(data).to_bytes(8, "big"))
        self._h.update(data)

    def file(self, path: Path) -> None:
        """The file's content as one part: its length first (from fstat), then its bytes in chunks."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._h.update(size.to_bytes(8, "big"))
            seen = 0
            while seen < size:
                chunk = handle.read(min(CHUNK, size - seen))
                if not chunk:
                    break
                self._h.update(chunk)
                seen += len(chunk)
            if seen != size or handle.read(1):
                raise OSError(errno.ESTALE, f"{path} changed while it was hashed")

    def hexdigest(self) -> str:
        return self._h.hexdigest()
