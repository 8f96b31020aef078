"""Shared unit-test helpers: build custom/ folders from a dict of files."""

from __future__ import annotations

from pathlib import Path

import pytest

VALID_USERS = "name,password,admin\njane,secret-1\nbob,secret-2,yes\n"


def write_tree(root: Path, files: dict[str, str | bytes | None]) -> Path:
    """Create `files` (relative path -> text/bytes) below root; None deletes a file."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        if content is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def make_custom(tmp_path: Path):
    """make_custom({"apt.txt": "git\\n"}) -> a folder with a valid users.csv plus these files."""
    counter = iter(range(1_000_000))

    def make(files: dict[str, str | bytes | None] | None = None, users: bool = True) -> Path:
        root = tmp_path / f"custom{next(counter)}"
        base: dict[str, str | bytes | None] = {"users.csv": VALID_USERS} if users else {}
        return write_tree(root, {**base, **(files or {})})

    return make
