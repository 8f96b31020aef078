"""Stable UIDs for students, persisted in the state dir: a name keeps its UID forever.

New names get the next free UID; removing a name never frees its UID, so a
home on the host always belongs to the same person across rebuilds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FIRST_UID = 2000
PROBE_UID = 1999  # the daemon's health-check account


class UidMap:
    def __init__(self, path: Path):
        self.path = Path(path)

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {str(k): int(v) for k, v in data.get("users", {}).items()}

    def _save(self, users: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"users": users}, f, sort_keys=True, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def assign(self, names: "list[str] | tuple[str, ...]") -> dict[str, int]:
        """UIDs of `names`, allocating (and persisting) new ones in the given order."""
        users = self._load()
        next_uid = max([FIRST_UID - 1, *users.values()]) + 1
        changed = False
        for name in names:
            if name not in users:
                users[name], next_uid, changed = next_uid, next_uid + 1, True
        if changed:
            self._save(users)
        return {name: users[name] for name in names}

    def known(self) -> dict[str, int]:
        return self._load()
