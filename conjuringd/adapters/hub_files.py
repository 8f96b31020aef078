"""Host-side files the hub container mounts: atomic writes and folder mirroring. Blocking."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conjuringd.hashing import file_sha256

CHUNK = 1 << 20


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write `data` to `path` via temp + fsync + rename; False when it was already so."""
    path = Path(path)
    try:
        if path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def copy_atomic(src: Path, path: Path, mode: int = 0o644) -> None:
    """Copy `src` to `path` via temp + fsync + rename, in chunks (never the whole file in memory)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(src, "rb") as reader, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK)
        writer.flush()
        os.fsync(writer.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def mirror_tree(src: Path, dst: Path, file_mode: int = 0o644, dir_mode: int = 0o755) -> int:
    """Make `dst` hold exactly `src`'s regular files (world-readable unless modes say otherwise);
    returns files changed.

    `dst` itself is kept (it is bind-mounted into the container), only its content changes.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    os.chmod(dst, dir_mode)
    wanted = set()
    if src.is_dir():
        for path in sorted(src.rglob("*")):
            if path.is_file() and not path.is_symlink():
                wanted.add(path.relative_to(src).as_posix())
    changed = 0
    for rel in sorted(wanted):
        target = dst / rel
        for parent in reversed(target.relative_to(dst).parents[:-1]):
            (dst / parent).mkdir(exist_ok=True)
            os.chmod(dst / parent, dir_mode)
        if not target.is_file() or file_sha256(target) != file_sha256(src / rel) or (target.stat().st_mode & 0o777) != file_mode:
            copy_atomic(src / rel, target, file_mode)
            changed += 1
    for path in sorted(dst.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = path.relative_to(dst).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(w == rel or w.startswith(rel + "/") for w in wanted):
                shutil.rmtree(path)
                changed += 1
        elif rel not in wanted:
            path.unlink()
            changed += 1
    return changed
