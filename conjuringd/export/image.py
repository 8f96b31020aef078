"""The single-user image of a Zero to JupyterHub export: the hub image's layers without the hub.

`conjuringd.hub.dockerfile.image_layers` gives both images the same base, CA certificates,
core venv, apt packages, conda/pip environments and kernels, in the same order. The hub's own
parts (JupyterHub's proxy, PAM, the idle culler, conjuringd's runtime: its hub config, the fork
server, the spare kernel) stay out; the chart's hub, proxy and culler run in their own pods.
On top: shared/ read-only at /shared, home_default/ at HOME_DEFAULT for the postStart hook
(SEED_HOME) to copy into a new home, and the chart's user (uid 1000, group 100, /home/jovyan).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from conjuringd.config.model import CustomConfig, FileTree
from conjuringd.hub.dockerfile import Builder, Core, Rendered, image_layers

HOME = "/home/jovyan"  # the chart's singleuser.storage.homeMountPath default
UID, GID = 1000, 100  # the chart's singleuser.uid and fsGid defaults
HOME_DEFAULT = "/opt/conjuring/home_default"
SEED_HOME = "/opt/conjuring/seed-home"
SEED_MARK = ".conjuring-seeded"
PORT = 8888  # KubeSpawner's port
# the single-user server needs jupyterhub (jupyterhub-singleuser), jupyterlab and notebook; not the proxy,
# PAM or the culler. The same pins as the hub's core.
SINGLEUSER_CORE = Core(only=("jupyterhub", "jupyterlab", "notebook"), set_apt=False)

# Run by the kubelet after the container starts (singleuser.lifecycleHooks.postStart), as the student, in the
# home the chart mounted: a home without the mark gets home_default/'s files (never over one it has) and a
# shared -> /shared link, as a new home on the box does; then the mark, so a deleted file stays deleted.
SEED_SCRIPT = f"""#!/bin/sh
set -eu
home="${{HOME:-{HOME}}}"
[ -e "$home/{SEED_MARK}" ] && exit 0
# what is inside home_default/, not the folder itself: the home's own mode and owner stay the volume's
find {HOME_DEFAULT} -mindepth 1 -maxdepth 1 -printf '%P\\0' | tar -C {HOME_DEFAULT} --null -T - -cf - \\
  | tar -C "$home" -xf - --skip-old-files --no-same-owner
[ -e "$home/shared" ] || [ -L "$home/shared" ] || ln -s /shared "$home/shared"
touch "$home/{SEED_MARK}"
""".encode()


class ExportError(Exception):
    """The folder cannot be exported (a file changed or vanished while it was read)."""


def tree_files(root: Path, tree: FileTree, prefix: str) -> list[tuple[str, bytes, int]]:
    """The validated tree's files read from `root`, each checked against the digest the validator took."""
    out = []
    for rel, digest in tree.files:
        try:
            data = (root / rel).read_bytes()
        except OSError as exc:
            raise ExportError(f"{root / rel}: cannot be read ({exc.strerror})") from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise ExportError(f"{root / rel}: changed while it was exported; export again")
        out.append((f"{prefix}/{rel}", data, 0o644))
    return out


def render_singleuser(config: CustomConfig) -> Rendered:
    """The single-user image's Dockerfile and context for `config` (validated by conjuringd.config.load)."""
    b = Builder()
    image_layers(b, config, SINGLEUSER_CORE)
    b.section("singleuser")
    b.step(f"RUN if getent passwd {UID} >/dev/null; then usermod --login jovyan --home {HOME} --move-home "
           f"--gid {GID} \"$(getent passwd {UID} | cut -d: -f1)\"; else useradd --uid {UID} --gid {GID} "
           f"--create-home --home-dir {HOME} --shell /bin/bash jovyan; fi")
    root = Path(config.root)
    files = [("files" + SEED_HOME, SEED_SCRIPT, 0o755), (f"files{HOME_DEFAULT}/.keep", b"", 0o644),
             ("files/shared/.keep", b"", 0o644)]
    files += tree_files(root / "shared", config.shared, "files/shared")
    files += tree_files(root / "home_default", config.home_default, f"files{HOME_DEFAULT}")
    for path, data, mode in files:
        b.add(path, data, mode)
    # root-owned files: read-only for the students; the .keep files only made the folders exist
    b.step("COPY files/ /")
    b.step(f"RUN rm -f /shared/.keep {HOME_DEFAULT}/.keep")
    b.step(f"ENV HOME={HOME} SHELL=/bin/bash")
    b.step(f"WORKDIR {HOME}")
    b.step(f"USER {UID}:{GID}")
    b.step(f"EXPOSE {PORT}")
    b.step('CMD ["jupyterhub-singleuser"]')
    return b.rendered()
