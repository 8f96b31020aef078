"""The hub's pinned core, one set per range of base Pythons, chosen at build time.

The newest set (jupyterhub 6.1, jupyterlab 4.6, notebook 7.6) needs Python 3.10. An older Debian base
such as bullseye (Python 3.9) gets the newest releases that still support its Python: jupyterhub 5.5,
jupyterlab 4.5, notebook 7.5. Bullseye's archive has no node-configurable-http-proxy, so that set takes
PyPI's Python proxy, and a current pip first (bullseye's venv pip 20.3 predates the wheels' metadata).

The build's core step asks the base's python3 which set it can run (`choose_command`); the minimum
Python of all sets is what `conjuringd.config.bases` checks a base against.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CoreSet:
    name: str  # the file name under core/ in the build context
    min_python: tuple[int, int]
    packages: tuple[str, ...]  # pip pins of the hub's venv
    apt: tuple[str, ...] = ()  # extra Debian packages (the proxy, when the archive has it)
    pip: str = ""  # a pip to install first, when the base's own is too old


# Pinned core versions (PyPI). The proxy is Node's configurable-http-proxy from Debian (apt, no npm):
# PyPI's Python proxy buffers every response with a 20 s timeout and 10 upstream connections, so a class
# waiting on the spawn-pending progress streams got 503s (tests/bench/classroom.py).
CURRENT = CoreSet(
    name="py3.10",
    min_python=(3, 10),
    packages=("jupyterhub==6.1.1", "jupyterlab==4.6.6", "notebook==7.6.5", "jupyterhub-idle-culler==2.0.0",
              "pamela==1.2.0"),
    apt=("node-configurable-http-proxy",),
)
# Python 3.9 (Debian 11 bullseye): the last releases with Requires-Python <= 3.9; PyPI's proxy (see above:
# fine for a room, slower than Node's for a class logging in at once).
PY39 = CoreSet(
    name="py3.9",
    min_python=(3, 9),
    packages=("jupyterhub==5.5.4", "jupyterlab==4.5.11", "notebook==7.5.8", "jupyterhub-idle-culler==2.0.0",
              "pamela==1.2.0", "configurable-http-proxy==0.4.0"),
    pip="pip==26.0.1",
)
SETS = (CURRENT, PY39)  # newest first: a base gets the first set its Python can run
MIN_PYTHON = min(s.min_python for s in SETS)
CHOSEN = "/opt/conjuring/core-constraints.txt"  # the chosen set's pins, kept for later pip installs


def choose_command() -> str:
    """A shell snippet that sets $core to the name of the newest set the base's python3 runs (any Python 3)."""
    table = ", ".join(f"({s.min_python!r}, {s.name!r})" for s in SETS)
    code = (f"import sys; print(next(n for v, n in [{table}] if sys.version_info[:2] >= v))")
    return f"core=$(python3 -c \"{code}\")"


def files() -> tuple[tuple[str, bytes], ...]:
    """core/<set>.txt (pins), core/<set>.apt and core/<set>.pip (one line each, maybe empty) per set."""
    out = []
    for s in SETS:
        out.append((f"core/{s.name}.txt", "".join(f"{pin}\n" for pin in s.packages).encode()))
        out.append((f"core/{s.name}.apt", " ".join(s.apt).encode()))
        out.append((f"core/{s.name}.pip", s.pip.encode()))
    return tuple(out)


__all__ = ["CHOSEN", "CURRENT", "MIN_PYTHON", "PY39", "SETS", "CoreSet", "choose_command", "files"]
