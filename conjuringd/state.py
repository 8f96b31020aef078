"""state.json: what is active, what has converged, which builds failed. Atomic writes only."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conjuringd import atomic


@dataclass(frozen=True)
class State:
    active: str = ""  # hash of the active snapshot
    active_source: dict[str, Any] = field(default_factory=dict)
    last_good: str = ""  # last snapshot whose hub converged
    local_digest: str = ""  # digest of the local folder when it was last imported
    converged: dict[str, Any] = field(default_factory=dict)  # hashes + time of the last convergence
    failed_builds: dict[str, Any] = field(default_factory=dict)  # image hash -> {step, tail, at}
    switch_requested: bool = False  # the teacher asked a waiting new hub to take over (cleared once it has)


class StateFile:
    def __init__(self, path: Path):
        self.path = path

    def read(self) -> State:
        raw = atomic.read_json(self.path, {})
        known = {k: v for k, v in raw.items() if k in State.__dataclass_fields__}
        return State(**known)

    def update(self, **changes: Any) -> State:
        state = replace(self.read(), **changes)
        atomic.write_json(self.path, state.__dict__, mode=0o600)
        return state

    def record_failed_build(self, image_hash: str, step: str, tail: tuple[str, ...]) -> None:
        failed = dict(self.read().failed_builds)
        failed[image_hash] = {"step": step, "tail": list(tail), "at": time.time()}
        self.update(failed_builds=failed)

    def clear_failed_builds(self) -> None:
        self.update(failed_builds={})
