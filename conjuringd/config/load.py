"""load_custom(folder): read a whole custom/ folder, report every problem, build CustomConfig.

Everything is read and checked before anything is returned; the config is
None exactly when there is an error. Bad content never raises: only a root
folder that is missing or cannot be listed raises `ConfigError`.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import structlog

from conjuringd.config import checks
from conjuringd.config.bases import check_base
from conjuringd.config.files import KIB, MIB, Reader, TreeScan, decode_utf8, list_dir, read_tree
from conjuringd.config.machine import MachineSettings, read_machine
from conjuringd.config.model import CustomConfig, FileTree, Kernel, Settings, User
from conjuringd.config.problems import ConfigError, Problem, error, has_errors, warning
from conjuringd.config.requirements import check_requirements
from conjuringd.config.settings import build, check_channel, check_settings, merge, read_toml
from conjuringd.config.users import parse_users

log = structlog.get_logger(__name__)

LIMITS = {"users.csv": MIB, "apt.txt": 256 * KIB, "requirements": 256 * KIB}
DEFAULT_LIMIT = MIB
FILES = ("users.csv", "apt.txt", "requirements.txt", "environment.yml", "base.Dockerfile", "conjuring.toml")
FOLDERS = ("home_default", "shared", "srv", "certs")
ENVIRONMENT_RE = re.compile(r"environment(?:[-_](?P<kernel>.+))?\.ya?ml")
REQUIREMENTS_RE = re.compile(r"requirements-(?P<kernel>.+)\.txt")
COMPOSE_FILES = frozenset(
    f"{stem}.{ext}" for stem in ("docker-compose.override", "compose.override", "docker-compose") for ext in ("yml", "yaml")
)
KERNEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
RESERVED_KERNELS = frozenset({"python3", "root"})  # "base" is the default environment (environment.yml)
# the hub's own files in /srv/jupyterhub, never replaced from srv/ (hub/runtime/srvcopy.py)
SRV_HUB_OWN = frozenset({"jupyterhub.sqlite", "jupyterhub_cookie_secret", "jupyterhub-proxy.pid", ".conjuring-srv.json"})
# COMPLETE(.txt): the marker of a stick that replaces the whole configuration (conjuringd/merge.py)
IGNORED_RE = re.compile(r"\..*|home_backup|complete(\.txt)?|(readme|license|licence|changelog)(\..*)?|desktop\.ini|thumbs\.db",
                        re.IGNORECASE)


@dataclass
class _Load:
    reader: Reader
    settings: Settings = Settings()
    folder_toml: bytes = b""
    users: tuple[User, ...] = ()
    apt: tuple[str, ...] = ()
    requirements: bytes = b""
    environment: bytes = b""
    environment_file: str = ""
    kernels: dict[str, Kernel] = field(default_factory=dict)
    dockerfile: bytes = b""
    base_image: str = ""
    certs: list[tuple[str, bytes]] = field(default_factory=list)
    hub_config: bytes = b""
    trees: dict[str, FileTree] = field(default_factory=dict)
    srv: FileTree = FileTree()

    @property
    def problems(self) -> list[Problem]:
        return self.reader.problems


def load_custom(
    folder: str | os.PathLike[str], machine_toml: Path | MachineSettings | None = None
) -> tuple[CustomConfig | None, tuple[Problem, ...]]:
    """Read and check everything in `folder` (and the machine's conjuring.toml).

    Returns the config (None iff any problem is an error) and every problem,
    sorted by file and line. Raises ConfigError only when `folder` itself
    cannot be listed. A machine file given as a path is checked here and its
    problems are part of the result (`conjuringctl validate --machine-toml`);
    the daemon passes the `MachineSettings` it has checked itself (see
    machine.py), whose problems it reports on its own and which never make a
    folder invalid.
    """
    root = Path(folder)
    try:
        entries = list_dir(root)
    except OSError as exc:
        raise ConfigError([error("custom", 0, f"cannot read the configuration folder {root}: {exc.strerror or exc}")]) from exc
    state = _Load(Reader(root))
    _guard(state, "custom/conjuring.toml", lambda: _load_settings(state, root, machine_toml))
    for entry in entries:
        _guard(state, f"custom/{entry.name}", lambda entry=entry: _load_entry(state, entry))
    if not state.users and not any(p.file == "custom/users.csv" and p.severity.value == "error" for p in state.problems):
        state.problems.append(error("custom/users.csv", 0, "is missing: the hub needs at least one user"))
    _guard(state, "custom/shared", lambda: _load_trees(state, root))
    _guard(state, "custom/base.Dockerfile", lambda: _check_base_python(state))
    _guard(state, "docker-compose.override.yml", lambda: _load_compose_beside(state, root))
    problems = tuple(sorted(state.problems, key=lambda p: (p.file, p.line, p.severity.value, p.message)))
    if has_errors(problems):
        return None, problems
    return _build(state, root), problems


def _guard(state: _Load, name: str, step: Callable[[], None]) -> None:
    """A bug in a check must not crash the daemon: it becomes an error on that file."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - deliberately broad, see docstring
        log.exception("config_check_crashed", file=name)
        state.problems.append(error(name, 0, f"internal error while checking this file ({type(exc).__name__}); please report it"))


def _build(state: _Load, root: Path) -> CustomConfig:
    return CustomConfig(
        root=str(root),
        users=state.users,
        apt_packages=state.apt,
        requirements=state.requirements,
        environment=state.environment,
        kernels=tuple(sorted(state.kernels.values(), key=lambda k: k.name)),
        base_dockerfile=state.dockerfile,
        base_image=state.base_image,
        certs=tuple(sorted(state.certs)),
        hub_config=state.hub_config,
        shared=state.trees.get("shared", FileTree()),
        home_default=state.trees.get("home_default", FileTree()),
        settings=state.settings,
        toml=state.folder_toml,
        srv=state.srv,
    )


# --- conjuring.toml ------------------------------------------------------------------


def _load_settings(state: _Load, root: Path, machine_toml: Path | MachineSettings | None) -> None:
    if isinstance(machine_toml, MachineSettings):
        machine = machine_toml
    else:
        machine = read_machine(machine_toml)
        state.problems.extend(machine.problems)
    folder = None
    if os.path.lexists(root / "conjuring.toml"):
        raw = state.reader.read("conjuring.toml", DEFAULT_LIMIT)
        if raw is not None:
            state.folder_toml = raw
            folder = read_toml(raw, "custom/conjuring.toml")
    folder_clean = check_settings(folder, machine=False) if folder else {}
    state.settings = build(Settings, merge(machine.data, folder_clean))
    if folder:
        state.problems.extend(folder.problems)
    hotspot = folder_clean.get("network", {}).get("hotspot", {})
    if {"channel", "band"} & hotspot.keys():  # the machine file's own channel was checked with it
        state.problems.extend(check_channel(state.settings, folder))


# --- top-level entries ---------------------------------------------------------------


def _load_entry(state: _Load, entry: os.DirEntry[str]) -> None:
    name, shown = entry.name, f"custom/{entry.name}"
    if name in ("conjuring.toml", "shared", "home_default"):
        return  # read by _load_settings / _load_trees
    if IGNORED_RE.fullmatch(name):
        return
    if entry.is_symlink():
        state.problems.append(warning(shown, 0, "is a symbolic link: skipped (links are never followed)"))
        return
    is_dir = entry.is_dir(follow_symlinks=False)
    if name in FOLDERS:
        if not is_dir:
            state.problems.append(error(shown, 0, "should be a folder"))
        elif name == "srv":
            _load_srv(state, Path(entry.path))
        else:
            _load_certs(state, Path(entry.path))
        return
    handler = _file_handler(name)
    if handler is None:
        state.problems.append(warning(shown, 0, f"unknown {'folder' if is_dir else 'file'}: ignored{_suggest(name)}"))
    elif is_dir:
        state.problems.append(error(shown, 0, "should be a file, not a folder"))
    else:
        handler(state, name)


def _file_handler(name: str) -> Callable[[_Load, str], None] | None:
    fixed = {
        "users.csv": _load_users,
        "apt.txt": _load_apt,
        "requirements.txt": _load_requirements,
        "base.Dockerfile": _load_dockerfile,
    }
    if name in fixed:
        return fixed[name]
    if name in COMPOSE_FILES:
        return _load_compose
    if ENVIRONMENT_RE.fullmatch(name):
        return _load_environment
    if REQUIREMENTS_RE.fullmatch(name):
        return _load_requirements
    return None


def _suggest(name: str) -> str:
    known = list(FILES) + list(FOLDERS) + ["environment-<name>.yml", "requirements-<name>.txt"]
    close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    if not close:
        return ""
    original = next(k for k in known if k.lower() == close[0])
    return f" (did you mean '{original}'?)"


def _text(state: _Load, rel: str, limit: int) -> tuple[bytes, str] | None:
    raw = state.reader.read(rel, limit)
    if raw is None:
        return None
    text, problem = decode_utf8(raw, state.reader.name(rel))
    if problem is not None:
        state.problems.append(problem)
        return None
    return raw, text


def _load_users(state: _Load, name: str) -> None:
    raw = state.reader.read(name, LIMITS["users.csv"])
    if raw is not None:
        state.users, problems = parse_users(raw, state.reader.name(name))
        state.problems.extend(problems)


def _load_apt(state: _Load, name: str) -> None:
    if loaded := _text(state, name, LIMITS["apt.txt"]):
        state.apt, problems = checks.check_apt(loaded[1], state.reader.name(name))
        state.problems.extend(problems)


def _load_requirements(state: _Load, name: str) -> None:
    loaded = _text(state, name, LIMITS["requirements"])
    if loaded is None:
        return
    state.problems.extend(check_requirements(loaded[1], state.reader.name(name)))
    match = REQUIREMENTS_RE.fullmatch(name)
    if match:
        _add_kernel(state, match.group("kernel"), "venv", name, loaded[0])
    else:
        state.requirements = loaded[0]


def _load_environment(state: _Load, name: str) -> None:
    """As the original's env2conda.sh: the environment is named by its `name:`, else by the file
    (environment-<name>.yml), else it is `base`; `base` is the default kernel's, any other name
    an extra kernel of that name (the name notebooks record in their metadata)."""
    loaded = _text(state, name, DEFAULT_LIMIT)
    if loaded is None:
        return
    shown = state.reader.name(name)
    state.problems.extend(checks.check_environment(loaded[1], shown))
    declared = checks.environment_name(loaded[1], shown)
    kernel = declared or ENVIRONMENT_RE.fullmatch(name).group("kernel") or "base"
    if kernel != kernel.lower():
        state.problems.append(warning(shown, 0, f"kernel '{kernel}' is named '{kernel.lower()}' (Jupyter "
                                      "lower-cases kernel names; notebooks naming either find it)"))
        kernel = kernel.lower()
    if kernel != "base":
        _add_kernel(state, kernel, "conda", name, loaded[0])
    elif state.environment_file:
        state.problems.append(
            error(state.reader.name(name), 0, f"the default environment is defined twice: {state.environment_file} and {name}")
        )
    else:
        state.environment, state.environment_file = loaded[0], name


def _add_kernel(state: _Load, kernel: str, kind: str, name: str, content: bytes) -> None:
    shown = state.reader.name(name)
    if not KERNEL_RE.fullmatch(kernel):
        state.problems.append(
            error(shown, 0, f"invalid kernel name '{kernel}': use lowercase letters, digits, '.', '_' and '-' (at most 64)")
        )
    elif kernel in RESERVED_KERNELS:
        state.problems.append(error(shown, 0, f"kernel name '{kernel}' is reserved (the default kernel's and conda's own)"))
    elif kernel in state.kernels:
        first = state.kernels[kernel].file
        state.problems.append(error(shown, 0, f"kernel '{kernel}' is defined twice: by {first} and by {name}"))
    else:
        state.kernels[kernel] = Kernel(name=kernel, kind=kind, file=name, content=content)


def _load_dockerfile(state: _Load, name: str) -> None:
    if loaded := _text(state, name, DEFAULT_LIMIT):
        state.base_image, problems = checks.check_dockerfile(loaded[1], state.reader.name(name))
        state.dockerfile = loaded[0]
        state.problems.extend(problems)


def _load_compose_beside(state: _Load, root: Path) -> None:
    """The original's place for docker-compose.override.yml is conjuring/, beside custom/: said, never used."""
    if root.name.lower() != "custom":
        return
    for path in checks.compose_beside(root.parent):
        state.problems.extend(checks.check_compose_override(checks.compose_text(path), f"conjuring/{path.name}"))


def _check_base_python(state: _Load) -> None:
    """A known base whose Python is too old for the hub's core fails here, before any build."""
    image = state.settings.hub.base_image or state.base_image
    message = check_base(image)
    if not message:
        return
    if state.settings.hub.base_image:
        state.problems.append(error("custom/conjuring.toml", 0, f"[hub] base_image: {message}"))
    else:
        text = state.dockerfile.decode("utf-8", "replace").splitlines()
        line = next((n for n, t in enumerate(text, 1) if re.match(r"(?i)\s*from\s", t)), 0)
        state.problems.append(error("custom/base.Dockerfile", line, message))


def _load_compose(state: _Load, name: str) -> None:
    loaded = _text(state, name, DEFAULT_LIMIT)
    state.problems.extend(checks.check_compose_override(loaded[1] if loaded else None, state.reader.name(name)))


# --- folders -------------------------------------------------------------------------


def _load_srv(state: _Load, folder: Path) -> None:
    """All of srv/ goes into the hub's /srv/jupyterhub (as the original copied it); its
    jupyterhub_config.py is also checked and run after conjuringd's own configuration."""
    for entry in _entries(state, folder, "srv"):
        rel = f"srv/{entry.name}"
        if entry.name == "jupyterhub_config.py" and entry.is_file(follow_symlinks=False):
            if loaded := _text(state, rel, DEFAULT_LIMIT):
                state.hub_config = loaded[0]
                state.problems.extend(checks.check_python(loaded[1], state.reader.name(rel)))
        elif entry.name in SRV_HUB_OWN:
            state.problems.append(warning(state.reader.name(rel), 0, "ignored: the hub keeps its own file of this name"))
    usb = state.settings.usb
    scan = TreeScan(max_files=usb.max_files, max_bytes=usb.max_bytes)
    tree = read_tree(folder, "custom/srv", scan)
    state.srv = FileTree(tuple(item for item in tree.files if item[0] not in SRV_HUB_OWN))
    state.problems.extend(p for p in scan.problems if p.file != "custom/srv")


def _load_certs(state: _Load, folder: Path) -> None:
    for entry in _entries(state, folder, "certs"):
        rel = f"certs/{entry.name}"
        if entry.name.endswith(".crt") and entry.is_file(follow_symlinks=False):
            raw = state.reader.read(rel, DEFAULT_LIMIT)
            if raw is not None:
                found = checks.check_cert(raw, state.reader.name(rel))
                state.problems.extend(found)
                if not found:
                    state.certs.append((entry.name, raw))
        elif not entry.name.startswith("."):
            why = "a symbolic link" if entry.is_symlink() else "not a .crt file"
            state.problems.append(warning(state.reader.name(rel), 0, f"ignored: {why} (certificates must be certs/*.crt files)"))


def _entries(state: _Load, folder: Path, rel: str) -> list[os.DirEntry[str]]:
    try:
        return list_dir(folder)
    except OSError as exc:
        state.problems.append(error(state.reader.name(rel), 0, f"cannot be listed: {exc.strerror or exc}"))
        return []


def _load_trees(state: _Load, root: Path) -> None:
    usb = state.settings.usb
    scan = TreeScan(max_files=usb.max_files, max_bytes=usb.max_bytes)
    for name in ("shared", "home_default"):
        state.trees[name] = read_tree(root / name, f"custom/{name}", scan)
    state.problems.extend(scan.problems)


__all__ = ["load_custom", "LIMITS"]
