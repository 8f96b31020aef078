"""Idle cost of the daemon: RSS, CPU-seconds and wake-ups over a quiet minute.

Usage: .venv/bin/python -m tests.bench.idle [--seconds 60] [--watchdog-sec 60] [-- extra daemon args]
Starts the real conjuringd (temp folders, default: --hub none --network none --usb none),
waits until it has converged, then samples /proc for the given time with nothing happening.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.support.daemon import Daemon

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wakeups(pid: int) -> int:
    """Context switches of every thread: each one is the process waking up (or being preempted)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--watchdog-sec", type=float, default=60, help="WatchdogSec the unit would set")
    parser.add_argument("daemon_args", nargs="*", default=["--hub", "none", "--network", "none", "--usb", "none"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        env = {"WATCHDOG_USEC": str(int(args.watchdog_sec * 1_000_000))}
        daemon = Daemon(Path(root), args=args.daemon_args, env=env)
        daemon.start()
        try:
            daemon.wait_event("converged", timeout=600)
            time.sleep(2)
            pid = daemon.proc.pid
            cpu0, wake0, rss_max = cpu_seconds(pid), wakeups(pid), 0
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                rss_max = max(rss_max, rss_kib(pid))
                time.sleep(1)
            cpu, wake = cpu_seconds(pid) - cpu0, wakeups(pid) - wake0
            pings = sum(1 for _, m in daemon.notify.collect(0.1) if m == "WATCHDOG=1")
            print(f"daemon args:        {' '.join(args.daemon_args)}")
            print(f"idle window:        {args.seconds:.0f} s (WatchdogSec={args.watchdog_sec:.0f})")
            print(f"RSS (max):          {rss_max / 1024:.1f} MiB")
            print(f"CPU:                {cpu:.3f} s ({100 * cpu / args.seconds:.3f} %)")
            print(f"context switches:   {wake} ({wake / args.seconds:.2f}/s, all threads)")
            print(f"threads:            {len(list(Path(f'/proc/{pid}/task').iterdir()))}")
            print(f"watchdog pings:     {pings} in the run")
        finally:
            daemon.close()


if __name__ == "__main__":
    sys.exit(main())
