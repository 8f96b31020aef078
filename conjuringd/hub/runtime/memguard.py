"""Per-student memory limit inside the one hub container (a JupyterHub-managed service).

All students share one container, so there is no per-student cgroup to put a
limit on. This guard reads /proc every few seconds, adds up the resident memory
of each student's processes (by UID), and when a student is over the limit it
ends that student's kernels, biggest first, until the rest fits; only when no
kernel is left to end does it stop the student's server itself. Other students
never pay for one student's runaway notebook. Runs as root in the container.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
KERNEL_MARKERS = ("ipykernel", "kernel-", "ipykernel_launcher")


@dataclass(frozen=True)
class Proc:
    pid: int
    uid: int
    rss: int  # bytes
    cmdline: str

    @property
    def is_kernel(self) -> bool:
        return any(marker in self.cmdline for marker in KERNEL_MARKERS)


def parse_size(text: str) -> int:
    """'1G', '512M', '2.5G', '1048576' -> bytes (binary units, as JupyterHub reads them)."""
    text = text.strip().upper().removesuffix("B")
    unit = text[-1] if text and text[-1] in UNITS else ""
    return int(float(text[: len(text) - len(unit)]) * UNITS[unit])


def choose_victims(procs: list[Proc], limit: int, min_uid: int) -> list[Proc]:
    """The processes to end so that every student (uid >= min_uid) fits in `limit` bytes."""
    by_uid: dict[int, list[Proc]] = {}
    for proc in procs:
        if proc.uid >= min_uid:
            by_uid.setdefault(proc.uid, []).append(proc)
    victims: list[Proc] = []
    for uid_procs in by_uid.values():
        total = sum(p.rss for p in uid_procs)
        # kernels first, biggest first; the server itself only as a last resort
        for proc in sorted(uid_procs, key=lambda p: (not p.is_kernel, -p.rss)):
            if total <= limit:
                break
            victims.append(proc)
            total -= proc.rss
    return victims


def read_procs(proc_root: Path = Path("/proc")) -> list[Proc]:
    procs = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss_kib = int(fields.get("VmRSS", "0 kB").split()[0] or 0)
        uid = int(fields.get("Uid", "0").split()[0])
        procs.append(Proc(int(entry.name), uid, rss_kib * 1024, cmdline))
    return procs


def enforce(limit: int, min_uid: int, proc_root: Path = Path("/proc")) -> list[Proc]:
    victims = choose_victims(read_procs(proc_root), limit, min_uid)
    for proc in victims:
        what = "kernel" if proc.is_kernel else "server"
        print(f"memguard: uid {proc.uid} over {limit >> 20} MiB: ending {what} pid {proc.pid} "
              f"({proc.rss >> 20} MiB)", file=sys.stderr, flush=True)
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return victims


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", required=True, help="per student, e.g. 1G")
    parser.add_argument("--min-uid", type=int, default=2000, help="students' UIDs start here")
    parser.add_argument("--interval", type=float, default=3.0)
    args = parser.parse_args(argv)
    limit = parse_size(args.limit)
    print(f"memguard: {limit >> 20} MiB per student, checked every {args.interval:g}s", file=sys.stderr, flush=True)
    while True:
        enforce(limit, args.min_uid)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
