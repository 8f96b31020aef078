"""USB stick figures: udev event -> configuration active, and the idle cost of the udev monitor.

Usage (root): .venv/bin/python -m tests.bench.usb [--runs 5] [--idle 20]
Starts its own systemd-udevd (private rules, as in the tests) unless one runs, and the
real conjuringd (--hub none --network none --usb udev, [usb] accept = ["loop"]).
For each run it attaches a small ext4 stick with a different users.csv and measures
  - attach -> udev event seen by the daemon (its `stick_seen` log time),
  - attach -> the new configuration active in state.json (polled every 2 ms),
  - attach -> REPORT.txt written back;
then samples CPU time and context switches of every daemon thread over a quiet
window, with --usb udev and (for comparison) --usb none.
Run it alone: block devices attached by anything else during the idle window
(other tests' loop devices) are udev events and do wake the monitor.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from tests.bench.idle import cpu_seconds, wakeups
from tests.support.daemon import REPO, Daemon
from tests.support.udev import Loops, Udevd, ext4_read, fat_read, fs_uuid, make_ext4_stick, make_fat_stick


def log_time(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def per_thread(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        switches = sum(int(line.split()[1]) for line in (task / "status").read_text().splitlines()
                       if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        out[f"{name}[{task.name}]"] = switches
    return out


def start_daemon(root: Path, usb: str) -> Daemon:
    root.mkdir(parents=True)
    daemon = Daemon(root, args=["--hub", "none", "--network", "none", "--usb", usb])
    daemon.config_dir.mkdir(parents=True)
    (daemon.config_dir / "conjuring.toml").write_text(f'[usb]\naccept = ["loop"]\nloop_images = "{root.parent}"\n')
    daemon.start()
    daemon.wait_event("converged", timeout=60)
    return daemon


def measure_imports(root: Path, runs: int, fs: str) -> None:
    daemon = start_daemon(root / f"d-{fs}", "udev")
    loops = Loops()
    seen, active, reported = [], [], []
    try:
        for i in range(runs):
            tree = root / f"tree-{fs}{i}"
            shutil.copytree(REPO / "custom", tree / "conjuring" / "custom")
            with open(tree / "conjuring" / "custom" / "users.csv", "a") as f:
                f.write(f"bench{i},pw-{i:06d}x,\n")
            uuid = ""
            if i:  # the teacher's one stick, edited between runs: same filesystem UUID and stick.key as run 0
                uuid = fs_uuid(first)
                key = ext4_read(first, "/conjuring/stick.key") if fs == "ext4" else fat_read(first, "conjuring/stick.key")
                (tree / "conjuring" / "stick.key").write_bytes(key)
            if fs == "ext4":
                image = make_ext4_stick(root / f"usb-{fs}{i}.img", tree, size_mb=16, uuid=uuid)
            else:  # names as a desktop writes them (long names keep their case)
                image = make_fat_stick(root / f"usb-{fs}{i}.img", tree, size_mb=16, upper=False, uuid=uuid)
            first = first if i else image  # run 0 is enrolled on first use
            before = json.loads((daemon.state_dir / "state.json").read_text()).get("active")
            t0 = time.time()
            device = loops.attach(image)
            while json.loads((daemon.state_dir / "state.json").read_text()).get("active") == before:
                if time.time() - t0 > 60:
                    raise SystemExit(f"stick {i} never became active:\n{daemon.log_path.read_text()[-3000:]}")
                time.sleep(0.002)
            active.append(time.time() - t0)
            events = daemon.wait_event("report_written", count=i + 1, timeout=30)
            reported.append(log_time(events[-1]) - t0)
            seen.append(log_time(daemon.events("stick_seen")[-1]) - t0)
            loops.detach(device)
            time.sleep(0.3)
    finally:
        loops.close()
        daemon.close()
    print(f"sticks imported:              {runs} ({fs}, 16 MiB, the shipped custom/ + 1 user)")
    for label, values in (("attach -> udev event in daemon", seen), ("attach -> configuration active", active),
                          ("attach -> REPORT.txt written", reported)):
        print(f"{label:30s} median {1000 * statistics.median(values):7.1f} ms  "
              f"min {1000 * min(values):7.1f}  max {1000 * max(values):7.1f}")


def measure_idle(root: Path, usb: str, seconds: float) -> None:
    daemon = start_daemon(root / f"idle-{usb}", usb)
    try:
        time.sleep(2)
        pid = daemon.proc.pid
        cpu0, wake0, threads0 = cpu_seconds(pid), wakeups(pid), per_thread(pid)
        time.sleep(seconds)
        cpu, wake, threads1 = cpu_seconds(pid) - cpu0, wakeups(pid) - wake0, per_thread(pid)
        busy = {name: threads1[name] - threads0.get(name, 0) for name in threads1 if threads1[name] != threads0.get(name, 0)}
        print(f"idle --usb {usb:5s} {seconds:.0f} s:  CPU {cpu:.3f} s, context switches {wake} "
              f"({wake / seconds:.2f}/s); threads that woke: {busy or 'none'}")
    finally:
        daemon.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=20)
    parser.add_argument("--fs", nargs="+", default=["ext4", "vfat"], choices=["ext4", "vfat"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        udevd = Udevd(root / "udevd").start()
        try:
            for fs in args.fs:
                measure_imports(root, args.runs, fs)
            measure_idle(root, "udev", args.idle)
            measure_idle(root, "none", args.idle)
        finally:
            udevd.stop()


if __name__ == "__main__":
    main()
