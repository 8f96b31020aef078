"""What a polling student sees while a new hub takes over, and whether a kernel survives the wait.

Usage (root, real dockerd, under `flock /tmp/conj-docker.lock`):
    .venv/bin/python -m tests.bench.switch
A student polls /hub/health every 20 ms during each switch; every refused
connection, timeout or 5xx counts as down. Prints, per path, the longest
outage, the total time down and how long the switch took:
  - idle: nobody working, requirements.txt changes, the hub is replaced at once;
  - staged: alice holds a variable in a kernel, the new hub waits beside the
    serving one (the kernel is checked after the wait), then the teacher asks.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.docker import ensure_dockerd
from tests.support.hubconfig import replace
from tests.support.hubworld import World, login, remove_hub_containers, start_kernel
from tests.support.kernel import execute

NAME, PORT = "conjuring-switch-bench", 18975


class Poller(threading.Thread):
    def __init__(self, base: str, every: float = 0.02):
        super().__init__(daemon=True)
        self.url, self.every = base + "/hub/health", every
        self.samples: list[tuple[float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            at = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=1) as resp:
                    up = resp.status < 500
            except urllib.error.HTTPError as exc:
                up = exc.code < 500
            except OSError:
                up = False
            self.samples.append((at, up))
            time.sleep(max(0.0, self.every - (time.monotonic() - at)))

    def outages(self) -> tuple[float, float]:
        """(longest outage, total time down) in seconds."""
        longest = total = 0.0
        down_since = None
        for at, up in self.samples + [(time.monotonic(), True)]:
            if not up and down_since is None:
                down_since = at
            elif up and down_since is not None:
                longest, total, down_since = max(longest, at - down_since), total + at - down_since, None
        return longest, total


def switch(world: World, change) -> dict:
    poller = Poller(world.base)
    poller.start()
    started = time.monotonic()
    change()
    done = asyncio.run(world.converge())
    poller.stop.set()
    poller.join()
    longest, total = poller.outages()
    return {"actions": ",".join(a.__name__ for a in done), "longest": longest, "total": total,
            "seconds": time.monotonic() - started}


def main() -> None:
    ensure_dockerd()
    rows = []
    for path in ("idle", "staged"):
        remove_hub_containers(NAME)
        world = World(Path(tempfile.mkdtemp(prefix=f"switch-{path}-")), name=NAME, port=PORT, switch_idle=10)
        try:
            asyncio.run(world.converge())
            survived = "-"
            if path == "staged":
                alice = login("alice", "alice-pw-1", world.base)
                kernel = start_kernel(alice, "alice")
                execute(alice, "alice", kernel, "kept = 42")
                world.config = replace(world.config, requirements=b"tabulate\n")
                asyncio.run(world.converge())  # builds and stages; the class keeps working
                survived = "yes" if execute(alice, "alice", kernel, "print(kept)").strip() == "42" else "NO"
                row = switch(world, lambda: setattr(world, "switch_requested", True))
            else:
                row = switch(world, lambda: setattr(world, "config", replace(world.config, requirements=b"tabulate\n")))
            rows.append({"path": path, "kernel kept while waiting": survived, **row})
        finally:
            asyncio.run(world.hub.close())
            remove_hub_containers(NAME)
    print(f"{'path':8} {'longest outage':>15} {'total down':>11} {'switch took':>12}  kernel kept while waiting  actions")
    for r in rows:
        print(f"{r['path']:8} {r['longest']:>14.2f}s {r['total']:>10.2f}s {r['seconds']:>11.1f}s  "
              f"{r['kernel kept while waiting']:25}  {r['actions']}")


if __name__ == "__main__":
    main()
