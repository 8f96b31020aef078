"""Per-student memory and CPU limits inside the one hub container (a JupyterHub-managed service).

All students share one container, so there is no per-student cgroup to put a
limit on. This guard reads /proc every few seconds and groups processes by the
student's UID:
- memory: when a student's memory (proportional set size: pages shared with
  the fork server and other students count in part) is over `--limit`, it ends that
  student's kernels, biggest first, until the rest fits; only when no kernel is
  left does it stop the student's server itself;
- CPU: when a student used more than `--cpus` CPUs over the last interval (all
  their processes: kernels, terminals, anything they started), all their
  processes are paused (SIGSTOP) for the excess and then resumed, so on average
  they get what the limit says. A process that was not there at the last look
  counts with all the CPU it has used; one that starts and ends between two
  looks is not seen.
Other students never pay for one student's runaway notebook. Runs as root.

The container has no cgroup of its own to split (Docker mounts /sys/fs/cgroup
read-only), hence signals rather than cgroup limits.
"""

from __future__ import annotations

import argparse
import ctypes
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
    memory: int  # bytes: Pss, or VmRSS where Pss cannot be read
    cmdline: str
    cpu: float = 0.0  # CPU-seconds used so far (user + system)

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
        total = sum(p.memory for p in uid_procs)
        # kernels first, biggest first; the server itself only as a last resort
        for proc in sorted(uid_procs, key=lambda p: (not p.is_kernel, -p.memory)):
            if total <= limit:
                break
            victims.append(proc)
            total -= proc.memory
    return victims


def cpu_used(before: dict[int, float] | None, procs: list[Proc], min_uid: int) -> dict[int, float]:
    """CPU-seconds each student (uid) used since the last look (`before`: pid -> CPU-seconds then, None at
    the first look, which only measures); a process not seen then counts all it has used."""
    used: dict[int, float] = {}
    if before is None:
        return used
    for proc in procs:
        if proc.uid >= min_uid:
            used[proc.uid] = used.get(proc.uid, 0.0) + max(0.0, proc.cpu - before.get(proc.pid, 0.0))
    return used


def pause_for(used: float, ran_for: float, cpus: float, interval: float) -> float:
    """How long to pause a student's processes in the next interval.

    `used` CPU-seconds over `ran_for` seconds unpaused is their demand; pausing for
    p leaves them `interval - p` seconds, in which they use `demand * (interval - p)`,
    which must not exceed `cpus * interval`."""
    demand = used / max(ran_for, 0.05)
    if demand <= cpus:
        return 0.0
    return min(interval, max(0.0, interval - cpus * interval / demand))


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_LIBC = ctypes.CDLL(None, use_errno=True)


def proportional_kib(entry: Path, uid: int, gid: int) -> int:
    """Pss of a process in KiB (0 if unreadable). Forked servers and kernels share most of their pages
    with the fork server, so their VmRSS would count the same pages once per student. Reading
    smaps_rollup needs ptrace access: root in a container lacks CAP_SYS_PTRACE, but a process whose
    filesystem uid and gid are the owner's may read it."""
    _LIBC.setfsgid(gid)
    _LIBC.setfsuid(uid)
    try:
        for line in (entry / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    finally:
        _LIBC.setfsuid(os.getuid())
        _LIBC.setfsgid(os.getgid())
    return 0


def read_procs(proc_root: Path = Path("/proc")) -> list[Proc]:
    procs = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields.get("Uid", "0").split()[0])
        gid = int(fields.get("Gid", "0").split()[0])
        memory_kib = proportional_kib(entry, uid, gid) or int(fields.get("VmRSS", "0 kB").split()[0] or 0)
        cpu = (int(stat[11]) + int(stat[12])) / _CLK_TCK
        procs.append(Proc(int(entry.name), uid, memory_kib * 1024, cmdline, cpu))
    return procs


def enforce(limit: int, min_uid: int, proc_root: Path = Path("/proc")) -> list[Proc]:
    victims = choose_victims(read_procs(proc_root), limit, min_uid)
    for proc in victims:
        what = "kernel" if proc.is_kernel else "server"
        print(f"memguard: uid {proc.uid} over {limit >> 20} MiB: ending {what} pid {proc.pid} "
              f"({proc.memory >> 20} MiB)", file=sys.stderr, flush=True)
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return victims


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def throttle(procs: list[Proc], pauses: dict[int, float]) -> None:
    """Pause every process of each over-limit student for their pause, then resume them all."""
    schedule = sorted((pause, [p.pid for p in procs if p.uid == uid]) for uid, pause in pauses.items())
    stopped = [pid for pause, pids in schedule if pause > 0 for pid in pids]
    if not stopped:
        return
    _signal_all(stopped, signal.SIGSTOP)
    waited = 0.0
    try:
        for pause, pids in schedule:  # shortest pause first: resume each student when their pause is over
            time.sleep(max(0.0, pause - waited))
            waited = max(waited, pause)
            _signal_all(pids, signal.SIGCONT)
    finally:
        _signal_all(stopped, signal.SIGCONT)


def run(limit: int | None, cpus: float | None, min_uid: int, interval: float, rounds: int | None = None) -> None:
    before: dict[int, float] | None = None
    pauses: dict[int, float] = {}
    while rounds is None or rounds > 0:
        rounds = None if rounds is None else rounds - 1
        started = time.monotonic()
        if limit:
            enforce(limit, min_uid)
        if cpus:
            procs = read_procs()
            used = cpu_used(before, procs, min_uid)
            pauses = {uid: pause_for(seconds, interval - pauses.get(uid, 0.0), cpus, interval)
                      for uid, seconds in used.items()}
            before = {p.pid: p.cpu for p in procs}
            throttle(procs, pauses)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", default="", help="memory per student, e.g. 1G")
    parser.add_argument("--cpus", type=float, default=0.0, help="CPUs per student, e.g. 0.5")
    parser.add_argument("--min-uid", type=int, default=2000, help="students' UIDs start here")
    parser.add_argument("--interval", type=float, default=3.0)
    args = parser.parse_args(argv)
    limit = parse_size(args.limit) if args.limit else None
    print(f"memguard: memory {limit >> 20 if limit else '-'} MiB, {args.cpus or '-'} CPUs per student, "
          f"checked every {args.interval:g}s", file=sys.stderr, flush=True)
    run(limit, args.cpus or None, args.min_uid, args.interval)


if __name__ == "__main__":
    sys.exit(main())
