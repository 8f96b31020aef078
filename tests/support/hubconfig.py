"""Build CustomConfig values for hub tests without the config parser."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from conjuringd.config.model import CustomConfig, FileTree, HubSettings, Kernel, Settings, User
from conjuringd.hashing import config_hashes, digest
from conjuringd.reconcile.model import Desired

PROXY_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def tree(folder: Path) -> FileTree:
    items = []
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                items.append((path.relative_to(folder).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest()))
    return FileTree(tuple(items))


def make_config(root: Path, users=(("alice", "alice-pw-1", False),), *, apt=(), requirements=b"", environment=b"",
                kernels=(), base_dockerfile=b"", base_image="", hub_config=b"", hub: HubSettings | None = None,
                certs: bool = True) -> CustomConfig:
    """A config read from `root` (only shared/ and home_default/ are taken from disk)."""
    cert_list = (("host-ca.crt", PROXY_CA.read_bytes()),) if certs and PROXY_CA.exists() else ()
    return CustomConfig(
        root=str(root),
        users=tuple(User(name, pw, admin, i + 2) for i, (name, pw, admin) in enumerate(users)),
        apt_packages=tuple(apt),
        requirements=requirements,
        environment=environment,
        kernels=tuple(Kernel(name, kind, f"requirements-{name}.txt" if kind == "venv" else f"environment-{name}.yml", body)
                      for name, kind, body in kernels),
        base_dockerfile=base_dockerfile,
        base_image=base_image,
        certs=cert_list,
        hub_config=hub_config,
        shared=tree(Path(root) / "shared"),
        home_default=tree(Path(root) / "home_default"),
        settings=Settings(hub=hub or HubSettings()),
        toml=b"",
    )


def desired(config: CustomConfig) -> Desired:
    fields = repr([(f.name, getattr(config, f.name)) for f in dataclasses.fields(config) if f.name != "root"])
    return Desired(hashes=config_hashes(config, digest(fields)), config=config, config_dir=config.root)


def replace(config: CustomConfig, **changes) -> CustomConfig:
    """A changed copy; shared/home_default are re-read from disk."""
    root = Path(changes.get("root", config.root))
    changes.setdefault("shared", tree(root / "shared"))
    changes.setdefault("home_default", tree(root / "home_default"))
    return dataclasses.replace(config, **changes)
