"""Login guessing against the real hub container: what a failed login tells, and how fast an attacker guesses.

    python -m tests.bench.logins [--rounds 5] [--connections 50] [--seconds 60]

Prints, for the 1st..Nth wrong password in a row, how long the failed login took
for an existing name (bob) and for an unknown one (the same series, one after
the other): they should be equal within noise. Then an attacker with N
parallel connections guesses (random names from a list with the real ones mixed
in, random passwords) for the given time; it prints the passwords actually
checked per minute (answered 403), those refused unchecked (429: the line was
full) and the latency of a real student's login during the attack.
Needs root and dockerd (started if missing); uses the test hub container name.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from conjuringd.adapters.hub_http import HubSession
from tests.support.docker import ensure_base_image, ensure_dockerd
from tests.support.hubworld import BASE, World, remove_hub_containers


def timed_login(name: str, password: str) -> tuple[int, float]:
    started = time.monotonic()
    status = HubSession(BASE, timeout=300).login(name, password)
    return status, time.monotonic() - started


def failure_timings(rounds: int) -> list[tuple[int, float, float]]:
    """The k-th wrong password in a row for bob, then the same series for a name nobody has."""
    series = []
    for name in ("bob", f"zed{secrets.token_hex(3)}"):
        times = []
        for _ in range(rounds):
            status, took = timed_login(name, secrets.token_hex(8))
            assert status == 403, status
            times.append(took)
        series.append(times)
    return [(k + 1, series[0][k], series[1][k]) for k in range(rounds)]


def attack(connections: int, seconds: float) -> dict:
    names = ["alice", "bob", "teacher"] + [f"student{i}" for i in range(40)]
    statuses: Counter = Counter()
    lock, stop = threading.Lock(), time.monotonic() + seconds

    def guesser():
        while time.monotonic() < stop:
            status, _ = timed_login(secrets.choice(names), secrets.token_hex(6))
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=guesser, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    time.sleep(min(10.0, seconds / 2))
    student = timed_login("alice", "alice-pw-1")  # a real student, in the middle of the attack
    for thread in threads:
        thread.join()
    elapsed = max(seconds, time.monotonic() - (stop - seconds))
    return {"statuses": statuses, "elapsed": elapsed, "student": student}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    ensure_dockerd()
    ensure_base_image()
    remove_hub_containers()
    with tempfile.TemporaryDirectory(prefix="bench-logins-") as tmp:
        world = World(Path(tmp))
        asyncio.run(world.converge())
        try:
            print("wrong password #   existing name (s)   unknown name (s)")
            rows = failure_timings(args.rounds)
            for k, existing, missing in rows:
                print(f"{k:>16}   {existing:>17.3f}   {missing:>16.3f}")
            diffs = [abs(a - b) for _, a, b in rows]
            print(f"largest difference: {max(diffs) * 1000:.0f} ms, median {statistics.median(diffs) * 1000:.0f} ms")
            result = attack(args.connections, args.seconds)
            per_minute = 60.0 / result["elapsed"]
            checked, refused = result["statuses"][403], result["statuses"][429]
            other = {k: v for k, v in result["statuses"].items() if k not in (403, 429)}
            print(f"attacker, {args.connections} parallel connections, {result['elapsed']:.0f} s: "
                  f"{checked * per_minute:.0f} passwords checked per minute, {refused * per_minute:.0f} refused "
                  f"unchecked (429) per minute, other answers {other}")
            status, seconds = result["student"]
            print(f"a real student's login during the attack: {status} in {seconds:.1f} s")
        finally:
            asyncio.run(world.hub.close())
            remove_hub_containers()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
