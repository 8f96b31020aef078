"""Jupyter server and JupyterLab extensions a teacher lists for the default kernel, to install beside the server.

In the original Conjuring one conda environment held the Jupyter server, the
default kernel, environment.yml and requirements.txt, so listing an extension
such as nbgitpuller or ipywidgets in either file put it into the server. Here
the server runs in the hub's venv and a non-empty environment.yml makes the
default kernel a conda environment of its own: the extensions named in
EXTENSIONS are found in both files and pip-installed into the hub's venv as
well (constrained to the hub's own pinned versions, so a teacher's list cannot
move JupyterLab or JupyterHub). Anything else stays in the kernel's environment.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from conjuringd.config.requirements import logical_lines

# PyPI names (PEP 503-normalised) whose server side (a server extension or a prebuilt lab extension) must be
# importable by the Jupyter server itself; widget libraries carry the lab half of their widgets
EXTENSIONS = frozenset("""
ipywidgets jupyterlab-widgets widgetsnbextension ipympl ipyleaflet bqplot plotly ipyvolume ipycanvas
nbgitpuller jupyterlab-git jupyter-resource-usage jupyter-server-proxy jupytext jupyterlab-lsp
jupyterlab-execute-time jupyterlab-spellchecker jupyterlab-code-formatter jupyterlab-myst
jupyter-collaboration nbgrader voila jupyterlab-latex jupyterlab-drawio
""".split())

_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_PIP_SPEC = re.compile(r"\s*(?:===|~=|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+(?:\s*,\s*(?:===|~=|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+)*\s*")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def conda_to_pip(spec: str) -> str:
    """A pip requirement for a conda match spec, or its name alone when the version is not pip's to read.

    `conda-forge::ipywidgets=8.1` -> `ipywidgets==8.1.*`; `x>=1,<2` stays; `x 1.2.*` -> `x==1.2.*`;
    a build string (`x=1.2=py_0`) or a bracket spec keeps only the version before it, or just the name.
    """
    spec = spec.split("::", 1)[-1].strip()
    match = _NAME.match(spec)
    if not match:
        return ""
    name, rest = match.group(1), spec[match.end():].strip()
    if rest.startswith("=") and not rest.startswith("=="):
        version = rest[1:].split("=", 1)[0].strip()
        if re.fullmatch(r"[0-9][0-9A-Za-z.]*(\.\*)?", version):
            return f"{name}=={version if version.endswith('*') else version + '.*'}"
        return name
    if re.fullmatch(r"[0-9][0-9A-Za-z.]*(\.\*)?", rest):
        return f"{name}=={rest}"
    if rest and _PIP_SPEC.fullmatch(rest):
        return f"{name}{rest.replace(' ', '')}"
    return name


def _environment_specs(environment: bytes) -> list[str]:
    """pip requirements for every dependency of an environment file (conda ones translated)."""
    try:
        data: Any = yaml.safe_load(environment.decode("utf-8", "replace"))
    except yaml.YAMLError:
        return []  # the validator reported it already
    deps = data.get("dependencies") if isinstance(data, dict) else None
    specs = []
    for dep in deps if isinstance(deps, list) else []:
        if isinstance(dep, str):
            specs.append(conda_to_pip(dep))
        elif isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            specs += [line.strip() for line in dep["pip"] if isinstance(line, str)]
    return [spec for spec in specs if spec]


def _requirement_specs(requirements: bytes) -> list[str]:
    # options after a requirement (--hash) are dropped: the hub's install takes the requirement only
    return [re.split(r"\s+--?\w", content, maxsplit=1)[0] for _, content in
            logical_lines(requirements.decode("utf-8", "replace")) if not content.startswith("-")]


def server_extensions(environment: bytes, requirements: bytes) -> tuple[str, ...]:
    """The requirements of known server-side extensions named in environment.yml and requirements.txt."""
    found: dict[str, str] = {}
    for spec in _environment_specs(environment) + _requirement_specs(requirements):
        match = _NAME.match(spec)
        if match and normalise(match.group(1)) in EXTENSIONS:
            found.setdefault(normalise(match.group(1)), spec.strip())
    return tuple(found[name] for name in sorted(found))
