"""Make a forked server or kernel see the student's own home, as if it had been started the usual way.

The fork server imports Jupyter as root, and a few libraries compute paths from
HOME (or the uid) once, at import: the forked child would then write its lab
workspaces to /root/.jupyter/lab/workspaces (500 for every student), look for
pip's user site in /root/.local, and so on. `settle()`, called in the child
once it is the student and has the student's environment, computes each such
value again, where the library keeps it. Everything else in jupyter_core,
jupyter_server, IPython and ipykernel reads HOME when asked, so it needs nothing.

Found by importing the fork server's preload as root and looking at every
module's globals and every traitlets class default for root's home; the hub
test (tests/integration/test_hub_homepaths.py) compares a forked server and
kernel path by path with ones started without the fork server.
"""

from __future__ import annotations

import importlib
import os
import shutil
import site
import sys
import sysconfig
import tempfile


def settle(kind: str, argv: list[str]) -> None:
    """Recompute what was fixed at import, from this process's uid, environment and folder, for the child
    of `kind` ("server" or "kernel") that runs `argv`."""
    interpreter(kind, argv)
    if kind == "kernel":
        kernel_environment()
    user_site()
    python_path()
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    jupyter_core()
    jupyterlab()
    send2trash()
    matplotlib()


def user_site() -> None:
    """site.USER_BASE/USER_SITE (and sysconfig's copy) of this user; the user site on sys.path as site.main() puts it."""
    old = site.USER_SITE
    site.USER_BASE = site.USER_SITE = None
    base, user = site.getuserbase(), site.getusersitepackages()  # both read HOME / PYTHONUSERBASE again
    sysconfig.get_config_vars()["userbase"] = base
    if old in sys.path and old != user:
        sys.path.remove(old)
    site.ENABLE_USER_SITE = (site.check_enableusersite() and not os.environ.get("PYTHONNOUSERSITE")
                             and not _in_venv_without_system_site())
    if site.ENABLE_USER_SITE and os.path.isdir(user) and user not in sys.path:
        site.addsitedir(user)


def _in_venv_without_system_site() -> bool:
    cfg = os.path.join(sys.prefix, "pyvenv.cfg")
    try:
        with open(cfg, encoding="utf-8") as file:
            lines = [line.split("=", 1) for line in file if "=" in line]
    except OSError:
        return False
    settings = {key.strip().lower(): value.strip().lower() for key, value in lines}
    return sys.prefix != sys.base_prefix and settings.get("include-system-site-packages") != "true"


def python_path() -> None:
    """PYTHONPATH's folders after sys.path[0], as the interpreter puts them at start-up."""
    extra = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[1:1] = [p for p in extra if p not in sys.path]


def interpreter(kind: str, argv: list[str]) -> None:
    """sys.executable and sys.orig_argv as the command would have set them: the kernel's own argv[0] (the fork
    server checked it is this Python, maybe by another name), the server script's #! line."""
    if kind == "kernel":
        sys.executable, sys.orig_argv = argv[0], list(argv)
        return
    script = shutil.which(argv[0]) or argv[0]
    try:
        with open(script, "rb") as file:
            first = file.readline(512)
    except OSError:
        return
    if first.startswith(b"#!") and len(first.split()) == 1:
        python = os.fsdecode(first[2:].strip())
        if os.path.realpath(python) == os.path.realpath(sys.executable):
            sys.executable, sys.orig_argv = python, [python, script, *argv[1:]]


def kernel_environment() -> None:
    """Variables a kernel's own imports put in its environment (its subprocesses inherit them); the fork
    server's were cleared with its environment. debugpy (imported by ipykernel's debugger) sets this one."""
    if "debugpy" in sys.modules:
        os.environ.setdefault("PYDEVD_USE_FRAME_EVAL", "NO")


def jupyter_core() -> None:
    paths = sys.modules.get("jupyter_core.paths")
    if paths is not None:
        paths._dtemps.clear()  # temporary config folders made for root (JUPYTER_NO_CONFIG)


def jupyterlab() -> None:
    """LabApp's user_settings_dir and workspaces_dir defaults are computed when jupyterlab.labapp is imported."""
    labapp = sys.modules.get("jupyterlab.labapp")
    if labapp is None:
        return
    from jupyterlab.commands import get_user_settings_dir, get_workspaces_dir

    reset_default(labapp.LabApp, "user_settings_dir", get_user_settings_dir())
    reset_default(labapp.LabApp, "workspaces_dir", get_workspaces_dir())


def reset_default(cls: type, name: str, value) -> None:
    """Change a traitlets class's static default, in the trait and in the per-class caches traitlets keeps."""
    cls.class_traits()[name].default_value = value
    for klass in (cls, *_subclasses(cls)):
        initial = klass.__dict__.get("_static_immutable_initial_values")
        if initial is not None and name in initial:
            initial[name] = value


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def send2trash() -> None:
    """Jupyter's "delete" moves files to the trash; send2trash fixes the trash folder and uid at import."""
    module = sys.modules.get("send2trash.plat_other")
    if module is not None:
        importlib.reload(module)  # same namespace: send2trash.send2trash sees the new values


def matplotlib() -> None:
    """matplotlib (a teacher may preload it) caches its config and cache folders and read its rc file at import."""
    mpl = sys.modules.get("matplotlib")
    if mpl is None:
        return
    mpl.get_configdir.cache_clear()
    mpl.get_cachedir.cache_clear()
    mpl.rc_file(mpl.matplotlib_fname())
    mpl.rcParamsOrig = mpl.rcParams.copy()
