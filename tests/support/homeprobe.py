"""Run inside a student's kernel (its source is sent as a cell): every HOME-derived path the kernel sees, as JSON.

Values are written with the student's home, name, uid and server port replaced by
placeholders, so that two students' kernels (one forked, one started the usual
way) can be compared path by path. `root_strings` lists every module-level value
and traitlets class default in the kernel that names root's home.
"""

import inspect
import json
import os
import re
import site
import sys
import sysconfig
import tempfile
import urllib.parse

import IPython
import jupyter_core.paths as jpaths
import send2trash.plat_other
from IPython.paths import get_ipython_cache_dir, get_ipython_dir
from jupyterlab.labapp import LabApp
from traitlets import HasTraits

HOME, UID, USER = os.environ["HOME"], os.getuid(), os.environ.get("USER", "")
# the server's port differs (forked: one the fork server bound; usual: 10000 + uid % 20000)
PORT = str(urllib.parse.urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "")).port)


def same(value):
    if isinstance(value, str):
        value = value.replace(HOME, "~").replace(f"/run/user/{UID}", "/run/user/<uid>").replace(f":{PORT}/", ":<port>/")
        return re.sub(rf"\b{re.escape(USER)}\b", "<user>", value.replace(f"Trash-{UID}", "Trash-<uid>"))
    if isinstance(value, (list, tuple)):
        return [same(v) for v in value]
    if isinstance(value, dict):
        return {k: same(v) for k, v in value.items()}
    return value


def root_strings():
    found = []

    def walk(value, where, depth=0):
        if isinstance(value, (str, bytes)):
            if (b"/root" if isinstance(value, bytes) else "/root") in value:
                found.append(where)
        elif isinstance(value, (list, tuple, set, frozenset)) and depth < 3:
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]", depth + 1)
        elif isinstance(value, dict) and depth < 3:
            for key, item in list(value.items()):
                walk(item, f"{where}[{key!r}]", depth + 1)

    for name, module in list(sys.modules.items()):
        if module is None or name in ("__main__", "__mp_main__", "linecache"):  # linecache: this cell's source
            continue
        for key, value in list(vars(module).items()):
            if key == "__doc__":
                continue
            walk(value, f"{name}.{key}")
            if inspect.isclass(value) and issubclass(value, HasTraits) and value.__module__ == name:
                for trait_name, trait in value.class_traits().items():
                    walk(getattr(trait, "default_value", None), f"{name}.{key}.{trait_name}")
    return sorted(found)


shell = IPython.get_ipython()
lab = LabApp.class_traits()
facts = {
    "expanduser": os.path.expanduser("~"),
    # JPY_PARENT_PID: a kernel the server started itself watches it (ipykernel's parent poller); a forked kernel's
    # parent is the fork server, and its lifeline does that job (conjuring_forkserver)
    "environ": {k: v for k, v in os.environ.items() if "TOKEN" not in k and k != "JPY_PARENT_PID"},
    "sys.path": sys.path,
    "sys.executable": sys.executable,
    "site": [site.ENABLE_USER_SITE, site.USER_BASE, site.USER_SITE, sysconfig.get_config_var("userbase")],
    "tempdir": tempfile.gettempdir(),
    "jupyter": [jpaths.jupyter_config_dir(), jpaths.jupyter_data_dir(), jpaths.jupyter_runtime_dir(),
                jpaths.jupyter_path(), jpaths.jupyter_config_path()],
    "lab": [lab["user_settings_dir"].default_value, lab["workspaces_dir"].default_value],
    "ipython": [get_ipython_dir(), get_ipython_cache_dir(), shell.profile_dir.location,
                str(shell.history_manager.hist_file), shell.history_manager.enabled],
    "trash": [send2trash.plat_other.HOMETRASH, send2trash.plat_other.TOPDIR_FALLBACK.decode()],
    "cwd": os.getcwd(),
    "root_strings": root_strings(),
}
print(json.dumps(same(facts)))
