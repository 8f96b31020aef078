#!/usr/bin/python3
"""Put the teacher's whole srv/ into /srv/jupyterhub, the hub's working folder, root-only.

Runs as root from the entrypoint, before JupyterHub starts. The original Conjuring copied
all of srv/ there, so a teacher's jupyterhub_config.py can name /srv/jupyterhub/my.key (its
SSL recipe). The daemon mounts this restart's srv/ read-only at /run/conjuring/hub/srv.
Files of the last copy that srv/ no longer has are removed (a manifest remembers them);
the hub's own state files there are never replaced. Folders 0700, files 0600, root:root.
"""

import json
import os
import sys
from pathlib import Path

SOURCE = Path("/run/conjuring/hub/srv")
TARGET = Path("/srv/jupyterhub")
MANIFEST = ".conjuring-srv.json"
HUB_OWN = frozenset({"jupyterhub.sqlite", "jupyterhub_cookie_secret", "jupyterhub-proxy.pid", MANIFEST})
CHUNK = 1 << 20


def wanted(source):
    """Relative paths of srv/'s regular files (links are not followed), minus the hub's own."""
    found = []
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(folder, d)))
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(source).as_posix()
            if path.is_file() and not path.is_symlink() and rel not in HUB_OWN:
                found.append(rel)
    return found


def previous(target):
    try:
        return [str(p) for p in json.loads((target / MANIFEST).read_text())]
    except (OSError, ValueError, TypeError):
        return []


def copy(src, dst):
    """One file, root-only, never through a link at the destination."""
    for parent in reversed(list(dst.relative_to(TARGET).parents)[:-1]):  # a list: slicing parents is Python 3.10+
        folder = TARGET / parent
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            folder.unlink()
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
    if dst.is_symlink() or dst.is_dir():
        raise OSError(f"{dst} is a link or a folder: not replaced")
    tmp = dst.with_name(f".{dst.name}.conjuring-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with open(src, "rb") as reader, os.fdopen(fd, "wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
    os.chown(tmp, 0, 0)
    os.chmod(tmp, 0o600)
    os.replace(tmp, dst)


def main():
    TARGET.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(TARGET, 0o700)
    files = wanted(SOURCE) if SOURCE.is_dir() else []
    for rel in previous(TARGET):
        stale = TARGET / rel
        if rel not in files and rel not in HUB_OWN and ".." not in Path(rel).parts and stale.is_file():
            stale.unlink()
    for rel in files:
        copy(SOURCE / rel, TARGET / rel)
    (TARGET / MANIFEST).write_text(json.dumps(files))
    os.chmod(TARGET / MANIFEST, 0o600)
    print(f"srv: {len(files)} file(s) in {TARGET}", file=sys.stderr)


if __name__ == "__main__":
    main()
