"""Checks of the smaller files of a custom/ folder: apt.txt, environment*.yml,
base.Dockerfile, certs/*.crt, srv/jupyterhub_config.py, docker-compose.override.yml.

Each function takes decoded text (or bytes) and the file's display name and
returns what it found plus problems; none raises for bad content.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Any

import yaml

from conjuringd.config.problems import Problem, error, warning
from conjuringd.config.requirements import check_line

APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
APT_ARCH = re.compile(r"[a-z0-9][a-z0-9-]*")
APT_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")
APT_RELEASE = re.compile(r"[a-z0-9][a-z0-9.-]*")


# --- apt.txt -----------------------------------------------------------------------------


def check_apt(text: str, file: str) -> tuple[tuple[str, ...], list[Problem]]:
    """Packages, whitespace-separated (as the original's xargs read them), `#` comments."""
    packages: list[str] = []
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for token in line.split("#", 1)[0].split():
            reason = _apt_reason(token)
            if reason:
                problems.append(error(file, number, reason))
                continue
            name = re.split(r"[:=/]", token, maxsplit=1)[0]
            if name in first:
                problems.append(warning(file, number, f"package '{name}' is listed twice (first on line {first[name]})"))
                continue
            first[name] = number
            packages.append(token)
    return tuple(packages), problems


def _apt_reason(token: str) -> str:
    if token.startswith("-"):
        return f"'{_cut(token)}' looks like an apt-get option: list package names only"
    match = re.fullmatch(r"([^:=/]+)(?::([^=/]*))?(?:=([^/]*)|/(.*))?", token)
    if not match:
        return f"'{_cut(token)}' is not a valid Debian package name"
    name, arch, version, release = match.groups()
    if not APT_NAME.fullmatch(name):
        hint = " (use lowercase)" if APT_NAME.fullmatch(name.lower()) else ""
        return f"'{_cut(name)}' is not a valid Debian package name{hint}"
    if arch is not None and not APT_ARCH.fullmatch(arch):
        return f"'{_cut(token)}': invalid architecture '{_cut(arch)}'"
    if version is not None and not APT_VERSION.fullmatch(version):
        return f"'{_cut(token)}': invalid version '{_cut(version)}'"
    if release is not None and not APT_RELEASE.fullmatch(release):
        return f"'{_cut(token)}': invalid release '{_cut(release)}'"
    return ""


# --- YAML -----------------------------------------------------------------------------


def load_yaml(text: str, file: str) -> tuple[Any, yaml.Node | None, list[Problem]]:
    """(data, node, problems): the node keeps line numbers for later messages."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader refuses non-printable characters here already
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        return data, node, []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        what = "; ".join(filter(None, [exc.context, exc.problem]))
        return None, None, [error(file, line, f"YAML syntax error: {what or exc}")]
    except (yaml.YAMLError, RecursionError) as exc:
        return None, None, [error(file, 0, f"YAML syntax error: {type(exc).__name__}: {_cut(str(exc))}")]
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2020-13-45
        return None, None, [error(file, 0, f"cannot read this YAML: {_cut(str(exc))}")]
    finally:
        if loader is not None:
            loader.dispose()


def _value_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return value_node
    return None


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def check_environment(text: str, file: str) -> list[Problem]:
    """A conda environment file: a mapping with a `dependencies` list."""
    data, node, problems = load_yaml(text, file)
    if problems:
        return problems
    if data is None:
        return [warning(file, 0, "is empty: this environment installs nothing")]
    if not isinstance(data, dict):
        return [error(file, _line(node), "should be a conda environment: a mapping with 'dependencies:'")]
    channels = data.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        problems.append(error(file, _line(_value_node(node, "channels")), "'channels' should be a list of channel names"))
    if "dependencies" not in data:
        return problems + [warning(file, 0, "has no 'dependencies:' list: this environment installs nothing")]
    deps, deps_node = data["dependencies"], _value_node(node, "dependencies")
    if deps is None:
        return problems + [warning(file, _line(deps_node), "'dependencies' is empty: this environment installs nothing")]
    if not isinstance(deps, list):
        return problems + [error(file, _line(deps_node), "'dependencies' should be a list")]
    item_nodes = deps_node.value if isinstance(deps_node, yaml.SequenceNode) else []
    for index, dep in enumerate(deps):
        item = item_nodes[index] if index < len(item_nodes) else None
        problems += _check_dependency(dep, item, file)
    return problems


def environment_name(text: str, file: str) -> str:
    """The environment's `name:` ("" when it has none, or the file does not parse)."""
    data, _, problems = load_yaml(text, file)
    name = data.get("name") if isinstance(data, dict) and not problems else None
    return str(name).strip() if isinstance(name, (str, int, float)) and not isinstance(name, bool) else ""


def _check_dependency(dep: Any, node: yaml.Node | None, file: str) -> list[Problem]:
    if isinstance(dep, str) and dep.strip() and not re.search(r"\s\S*\s", dep.strip()):
        return []
    if isinstance(dep, (int, float)) and not isinstance(dep, bool):
        return []  # e.g. "- 3.11" under a python pin is odd but conda reads it as text
    if isinstance(dep, dict) and list(dep) == ["pip"]:
        pip, pip_node = dep["pip"], _value_node(node, "pip")
        if not isinstance(pip, list):
            return [error(file, _line(pip_node), "'pip' should be a list of requirements")]
        nodes = pip_node.value if isinstance(pip_node, yaml.SequenceNode) else []
        problems = []
        for index, requirement in enumerate(pip):
            line = _line(nodes[index]) if index < len(nodes) else _line(pip_node)
            message = check_line(str(requirement).strip()) if isinstance(requirement, str) else "should be text"
            if message:
                problems.append(error(file, line, f"pip: {message}"))
        return problems
    return [error(file, _line(node), "each dependency should be a conda package spec like 'numpy>=1.24' or a 'pip:' list")]


# --- base.Dockerfile ---------------------------------------------------------------------


def check_dockerfile(text: str, file: str) -> tuple[str, list[Problem]]:
    """The image of its single FROM (the hub's base image), and problems."""
    args: dict[str, str] = {}
    image, problems, seen_from = "", [], False
    for line, instruction, rest in _instructions(text):
        if instruction == "ARG" and not seen_from:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip("\"'")
        elif instruction == "FROM" and seen_from:
            problems.append(
                error(file, line, "a second FROM: base.Dockerfile must be a single stage (its FROM chooses the "
                      "base image and the lines after it are added to the hub image)")
            )
        elif instruction == "FROM":
            seen_from = True
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                problems.append(error(file, line, "FROM needs an image name"))
                continue
            image = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            if "$" in image:
                problems.append(warning(file, line, f"cannot resolve the variable in 'FROM {words[0]}'"))
        elif not seen_from:
            problems.append(error(file, line, f"{instruction} before the first FROM: a Dockerfile must start with FROM"))
            return "", problems
    if not seen_from:
        problems.append(error(file, 0, "has no FROM line: it must name the base image, e.g. 'FROM debian:bookworm'"))
    return image, problems


def _instructions(text: str) -> list[tuple[int, str, str]]:
    result, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        words = (pending + stripped).split(None, 1)
        pending = ""
        if words:
            result.append((start, words[0].upper(), words[1] if len(words) > 1 else ""))
    if pending.strip():
        words = pending.split(None, 1)
        result.append((start, words[0].upper(), words[1] if len(words) > 1 else ""))
    return result


# --- certs/*.crt -------------------------------------------------------------------------

PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


def check_cert(data: bytes, file: str) -> list[Problem]:
    """One or more PEM certificates and nothing secret."""
    text = data.decode("ascii", errors="replace")
    blocks = PEM_BLOCK.findall(text)
    if any("PRIVATE KEY" in kind for kind, _ in blocks) or "PRIVATE KEY-----" in text:
        return [error(file, 0, "contains a private key: only CA certificates belong in certs/ (remove the key)")]
    certs = [body for kind, body in blocks if kind in ("CERTIFICATE", "TRUSTED CERTIFICATE")]
    if not certs:
        return [error(file, 0, "is not a PEM certificate (expected '-----BEGIN CERTIFICATE-----'; convert a DER file with openssl x509)")]
    for body in certs:
        try:
            der = base64.b64decode("".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            return [error(file, 0, "contains a certificate whose base64 body is damaged")]
        if not der.startswith(b"\x30"):
            return [error(file, 0, "contains a certificate block that is not DER-encoded X.509")]
    return []


# --- srv/jupyterhub_config.py ------------------------------------------------------------


def check_python(text: str, file: str) -> list[Problem]:
    """Syntax only: the file is never executed here."""
    try:
        compile(text, file, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return [error(file, exc.lineno or 0, f"Python syntax error: {exc.msg}")]
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return [error(file, 0, f"cannot compile this Python file: {_cut(str(exc) or type(exc).__name__)}")]
    return []


# --- docker-compose.override.yml ---------------------------------------------------------

_MACHINE = " (in the machine's /etc/conjuring/conjuring.toml)"
COMPOSE_KEYS = {
    "ports": "[hub] port",
    "mem_limit": "[hub] mem_limit",
    "memory": "[hub] mem_limit",
    "cpus": "[hub] cpu_limit",
    "cpu_count": "[hub] cpu_limit",
    "image": "[hub] base_image",
    "volumes": "[hub] home_dir" + _MACHINE,
    "shm_size": "[hub] shm_size",
    "runtime": "[hub] gpus" + _MACHINE,  # runtime: nvidia
    "devices": "[hub] gpus" + _MACHINE,  # deploy.resources.reservations.devices
    "gpus": "[hub] gpus" + _MACHINE,
}
COMPOSE_DEFAULT = ("ports -> [hub] port, mem_limit -> [hub] mem_limit, shm_size -> [hub] shm_size, "
                   "GPUs -> [hub] gpus" + _MACHINE)


def check_compose_override(text: str | None, file: str) -> list[Problem]:
    """Never executed: say which conjuring.toml keys replace what it sets."""
    data, _, _ = load_yaml(text, file) if text is not None else (None, None, [])
    found = sorted({f"{key} -> {COMPOSE_KEYS[key]}" for key in _keys(data, 0) if key in COMPOSE_KEYS})
    replacements = ", ".join(found) if found else COMPOSE_DEFAULT
    return [
        warning(
            file,
            0,
            f"is not executed by conjuringd; set these in conjuring.toml instead: {replacements}",
        )
    ]


COMPOSE_OVERRIDES = frozenset(f"{stem}.{ext}" for stem in ("docker-compose.override", "compose.override") for ext in ("yml", "yaml"))
COMPOSE_LIMIT = 1 << 20


def compose_beside(conjuring: Path) -> list[Path]:
    """Override files in a conjuring/ folder (any case, as FAT shows names), regular files only."""
    try:
        names = sorted(os.listdir(conjuring))
    except OSError:
        return []
    found = [conjuring / n for n in names if n.lower() in COMPOSE_OVERRIDES]
    return [p for p in found if os.path.isfile(p) and not os.path.islink(p)]


def compose_text(path: Path) -> str | None:
    """A compose file's text (at most 1 MiB, never through a link), None when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(COMPOSE_LIMIT).decode("utf-8", "replace")
    except OSError:
        return None


def _keys(data: Any, depth: int) -> set[str]:
    if depth > 20:
        return set()
    if isinstance(data, dict):
        keys = {str(k) for k in data}
        for value in data.values():
            keys |= _keys(value, depth + 1)
        return keys
    if isinstance(data, list):
        return set().union(*(_keys(v, depth + 1) for v in data)) if data else set()
    return set()


def _cut(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
