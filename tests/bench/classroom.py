"""Class start: N students log in at the same moment; how many get an executed cell, and how fast.

Usage (root, real dockerd; starts dockerd and bootstraps the base if needed):
    .venv/bin/python -m tests.bench.classroom --n 10 20 30 --variants baseline ours prewarm

Each simulated student does what a browser does, all starting together (one
thread each): GET /hub/login for the _xsrf form field, POST the login, GET
/hub/spawn/<name> (the hub starts the server or queues it; the browser then
shows the spawn-pending page), poll /user/<name>/lab until the student's own
server answers it, create a notebook session (which starts a kernel) and run a
cell over the kernel websocket that imports numpy and prints a result. A student
does not retry after an error page: that is a failure, with its reason.

Per run it prints N, successes, failures with reasons, p50/p95/max seconds from
login to the first executed cell, the slowest /hub/health answer during the
run, CPU-seconds of the hub, the proxy and the whole container (cgroup), the
container's peak memory, and memory per student (server + kernel, idle).
Variants: baseline (the original Conjuring's JupyterHub settings), ours,
prewarm (ours, with conjuringd.prewarm starting every server before class).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import websocket

from conjuringd.adapters.hub_http import HubSession
from conjuringd.prewarm import prewarm
from tests.bench.classroom_hub import VARIANTS, BenchHub, proc_cpu_seconds, proc_pss, proc_rss, proc_uid, students
from tests.support.docker import ensure_base_image, ensure_dockerd
from tests.support.kernel import execute

CELL = "import numpy as np; print(int(np.arange(1000).sum()))"
EXPECTED = "499500"
_REASONS = (rb"Spawn failed:[^<\n]*", rb"Too many users[^<\n]*", rb"didn't respond[^<\n]*", rb"<title>([^<]*)</title>")


@dataclass
class Student:
    name: str
    password: str
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    error: str = ""
    progress: list = field(default_factory=list)
    reconnects: int = 0


def generic(message: str) -> str:
    """A failure message without what differs per student (URL, port, seconds), so equal reasons group."""
    message = re.sub(r"http://[^ ]+/user/[^/ ]+/\S*", "<server>", message.strip())
    return re.sub(r"[0-9]+(\.[0-9]+)? seconds", "N seconds", message)[:100]


def reason(status: int, page: bytes, where: str) -> str:
    for pattern in _REASONS:
        match = re.search(pattern, page)
        if match:
            text = (match.group(1) if match.groups() else match.group(0)).decode("utf-8", "replace")
            return f"{status} {where}: {generic(text)}"
    return f"{status} {where}"


def follow_progress(session: HubSession, page: bytes, deadline: float) -> list[str]:
    """As the spawn-pending page does: read the hub's progress events until the server is ready."""
    match = re.search(rb'new EventSource\("([^"]+)"\)', page)
    if not match:
        raise RuntimeError("no progress stream on the spawn-pending page")
    url = html.unescape(match.group(1).decode())
    req = urllib.request.Request(session.base + url, headers={"Accept": "text/event-stream"})
    messages = []
    with session.opener.open(req, timeout=max(1.0, deadline - time.monotonic())) as stream:
        for raw in stream:
            if not raw.startswith(b"data:"):
                continue
            event = json.loads(raw[5:])
            messages.append(event.get("message", ""))
            if event.get("failed"):
                raise RuntimeError("spawn: " + generic(event.get("message", "failed")))
            if event.get("ready"):
                return messages
    raise RuntimeError("progress stream ended before the server was ready")


def open_lab(session: HubSession, name: str, deadline: float) -> list[str]:
    """GET /hub/spawn/<name> as the browser does after login; wait on the spawn-pending page if sent there."""
    status, _, page = session.request("GET", f"/hub/spawn/{name}")
    messages = []
    if status == 200 and "/spawn-pending/" in session.last_url:
        messages = follow_progress(session, page, deadline)
        status, _, page = session.request("GET", f"/user/{name}/lab")
    if status >= 400:
        raise RuntimeError(reason(status, page, "spawn"))
    if status != 200 or f"/user/{name}/" not in session.last_url:
        raise RuntimeError(f"{status} lab ended at {urllib.parse.urlsplit(session.last_url).path}")
    return messages


def run_student(student: Student, base: str, start: threading.Event, timeout: float) -> None:
    session = HubSession(base, timeout=60)
    start.wait()
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        status = session.login(student.name, student.password)
        if status != 302:
            raise RuntimeError(f"login {status}")
        student.phases["login"] = time.monotonic() - t0
        student.progress = open_lab(session, student.name, deadline)
        student.phases["lab"] = time.monotonic() - t0
        body = {"path": "class.ipynb", "name": "class.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
        status, _, page = session.request("POST", f"/user/{student.name}/api/sessions", body)
        if status != 201:
            raise RuntimeError(reason(status, page, "session"))
        kernel = json.loads(page)["kernel"]["id"]
        try:
            out = execute(session, student.name, kernel, CELL, timeout=max(5.0, deadline - time.monotonic()))
        except websocket.WebSocketException:  # JupyterLab reconnects a lost kernel connection; the student re-runs
            student.reconnects += 1
            out = execute(session, student.name, kernel, CELL, timeout=max(5.0, deadline - time.monotonic()))
        if out.strip() != EXPECTED:
            raise RuntimeError(f"cell printed {out.strip()[:40]!r}")
        student.seconds = time.monotonic() - t0
    except Exception as exc:  # noqa: BLE001 - every failure is a result, with its reason
        student.error = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        student.seconds = time.monotonic() - t0


class HealthWatch(threading.Thread):
    """GET /hub/health every 0.5 s; also samples the container's memory."""

    def __init__(self, hub: BenchHub):
        super().__init__(daemon=True)
        self.hub, self.stop, self.latencies, self.failures, self.mem_peak = hub, threading.Event(), [], 0, 0

    def run(self) -> None:
        session = HubSession(self.hub.base, timeout=10)
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                status, _, _ = session.request("GET", "/hub/health")
            except OSError:  # timed out or refused: counts as a failed check
                status = 0
            self.latencies.append(time.monotonic() - t)
            self.failures += status != 200
            self.mem_peak = max(self.mem_peak, self.hub.cgroup.memory())
            self.stop.wait(0.5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def per_student_memory(hub: BenchHub, measure) -> float:
    """Mean memory (MB) of one student's processes (single-user server + kernel), summed by uid."""
    by_uid = Counter()
    for pid, _ in hub.processes():
        uid = proc_uid(pid)
        if uid >= 1000:
            by_uid[uid] += measure(pid)
    return statistics.mean(by_uid.values()) / 2**20 if by_uid else float("nan")


def role_cpu(hub: BenchHub) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU-seconds so far) of the students' servers and kernels now running."""
    found = {}
    for pid, args in hub.processes():
        role = "kernels" if "ipykernel" in args else "servers" if "singleuser" in args else ""
        if role:
            found[pid] = (role, proc_cpu_seconds(pid))
    return found


def cpu_by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    spent = Counter()
    for pid, (role, seconds) in after.items():
        spent[role] += seconds - before.get(pid, (role, 0.0))[1]
    return {"servers_cpu": spent["servers"], "kernels_cpu": spent["kernels"]}


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_prewarm(hub: BenchHub, names: list[str]) -> dict:
    cpu0, t0 = hub.cgroup.cpu_seconds(), time.monotonic()
    report = asyncio.run(prewarm(hub.base, hub.token, names, hold_until=None))
    return {"prewarm_s": time.monotonic() - t0, "prewarm_cpu": hub.cgroup.cpu_seconds() - cpu0,
            "prewarm_ok": len(report.ready), "prewarm_failed": dict(report.failed)}


def run_class(hub: BenchHub, n: int, prewarmed: bool, timeout: float) -> dict:
    people = [Student(name, pw) for name, pw, _ in students(n)]
    result = {}
    anon0 = hub.cgroup.anon()
    if prewarmed:
        result.update(run_prewarm(hub, [s.name for s in people]))
    result["settle_s"] = hub.wait_idle()
    pids = hub.hub_pids()
    hub_cpu0 = {k: proc_cpu_seconds(p) for k, p in pids.items()}
    cpu0, roles0, client0 = hub.cgroup.cpu_seconds(), role_cpu(hub), self_cpu()
    hub.cgroup.reset_peak()
    watch = HealthWatch(hub)
    watch.start()
    start = threading.Event()
    threads = [threading.Thread(target=run_student, args=(s, hub.base, start, timeout), daemon=True) for s in people]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    start.set()
    for t in threads:
        t.join(timeout + 30)
    wall = time.monotonic() - t0
    result.update(cpu_by_role(roles0, role_cpu(hub)), client_cpu=self_cpu() - client0)
    time.sleep(3)  # let the kernels settle to idle before measuring memory
    watch.stop.set()
    watch.join()
    ok = [s.seconds for s in people if not s.error]
    result.update({
        "n": n, "ok": len(ok), "failures": Counter(s.error for s in people if s.error), "wall": wall,
        "p50": percentile(ok, 0.5), "p95": percentile(ok, 0.95), "max": max(ok) if ok else float("nan"),
        "reconnects": sum(s.reconnects for s in people),
        "saw_progress": sum(1 for s in people if s.progress),
        "saw_place_in_line": sum(1 for s in people if any("in line" in m for m in s.progress)),
        "health_max": max(watch.latencies, default=float("nan")), "health_failed": watch.failures,
        "health_over_1s": sum(1 for x in watch.latencies if x > 1.0), "health_checks": len(watch.latencies),
        "hub_cpu": proc_cpu_seconds(pids.get("hub", 0)) - hub_cpu0.get("hub", 0),
        "proxy_cpu": proc_cpu_seconds(pids.get("proxy", 0)) - hub_cpu0.get("proxy", 0),
        "total_cpu": hub.cgroup.cpu_seconds() - cpu0,
        "peak_mb": max(hub.cgroup.peak(), watch.mem_peak) / 2**20,
        "anon_per_student_mb": (hub.cgroup.anon() - anon0) / 2**20 / max(1, len(ok)),
        "rss_per_student_mb": per_student_memory(hub, proc_rss),
        "pss_per_student_mb": per_student_memory(hub, proc_pss),
        "phases_p50": {k: percentile([s.phases[k] for s in people if k in s.phases], 0.5) for k in ("login", "lab")},
    })
    return result


def run_variant(root: Path, key: str, n: int, port: int, image: str, timeout: float) -> dict:
    variant = VARIANTS[key]
    hub = BenchHub(root, f"conjuring-classroom-{port}", port)
    try:
        hub.start(variant, n, image)
        print(f"# {variant.name} N={n}: hub up", file=sys.stderr, flush=True)
        result = run_class(hub, n, variant.prewarm, timeout)
    except Exception as exc:  # noqa: BLE001 - a variant that cannot run is reported, the others still run
        result = {"n": n, "ok": 0, "failures": Counter({f"bench: {exc}"[:120]: n}), "error": str(exc)}
        print(hub.logs(), file=sys.stderr)
    finally:
        hub.remove()
    result["variant"] = variant.name
    return result


def fmt(value, spec: str = ".1f") -> str:
    if isinstance(value, float) and value != value:
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


ROWS = (
    ("students ok", lambda r: f"{r['ok']}/{r['n']}"),
    ("login->cell p50 s", lambda r: fmt(r.get("p50", float("nan")))),
    ("login->cell p95 s", lambda r: fmt(r.get("p95", float("nan")))),
    ("login->cell max s", lambda r: fmt(r.get("max", float("nan")))),
    ("p50 login / lab s", lambda r: "/".join(fmt(r.get("phases_p50", {}).get(k, float("nan"))) for k in ("login", "lab"))),
    ("saw progress / line", lambda r: f"{r.get('saw_progress', '-')}/{r.get('saw_place_in_line', '-')}"),
    ("kernel ws reconnects", lambda r: str(r.get("reconnects", "-"))),
    ("wall s", lambda r: fmt(r.get("wall", float("nan")))),
    ("/hub/health max s", lambda r: fmt(r.get("health_max", float("nan")), ".2f")),
    ("health >1s / failed", lambda r: f"{r.get('health_over_1s', '-')}/{r.get('health_failed', '-')} of {r.get('health_checks', '-')}"),
    ("hub CPU s", lambda r: fmt(r.get("hub_cpu", float("nan")))),
    ("proxy CPU s", lambda r: fmt(r.get("proxy_cpu", float("nan")))),
    ("servers / kernels CPU s", lambda r: f"{fmt(r.get('servers_cpu', float('nan')))} / {fmt(r.get('kernels_cpu', float('nan')))}"),
    ("container CPU s", lambda r: fmt(r.get("total_cpu", float("nan")))),
    ("bench client CPU s", lambda r: fmt(r.get("client_cpu", float("nan")))),
    ("CPU s / student", lambda r: fmt(r.get("total_cpu", float("nan")) / max(1, r["ok"]))),
    ("peak memory MB", lambda r: fmt(r.get("peak_mb", float("nan")), ".0f")),
    ("RSS/student MB", lambda r: fmt(r.get("rss_per_student_mb", float("nan")), ".0f")),
    ("PSS/student MB", lambda r: fmt(r.get("pss_per_student_mb", float("nan")), ".0f")),
    ("anon/student MB", lambda r: fmt(r.get("anon_per_student_mb", float("nan")), ".0f")),
    ("prewarm s (CPU s)", lambda r: f"{fmt(r['prewarm_s'])} ({fmt(r['prewarm_cpu'])}) {r['prewarm_ok']} ready" if "prewarm_s" in r else "-"),
)


def table(results: list[dict]) -> str:
    header = ["N=" + str(results[0]["n"])] + [r["variant"] for r in results]
    rows = [header] + [[label] + [get(r) for r in results] for label, get in ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for r in results:
        for why, count in sorted(r["failures"].items()):
            lines.append(f"  {r['variant']}: {count} x {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10])
    parser.add_argument("--variants", nargs="+", default=["baseline", "ours", "prewarm"], choices=sorted(VARIANTS))
    parser.add_argument("--port", type=int, default=18990)
    parser.add_argument("--image", default="", help="run this image instead of building the configuration's")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a student waits in all")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    ensure_dockerd()
    ensure_base_image()
    everything = []
    with tempfile.TemporaryDirectory(prefix="classroom-") as tmp:
        for n in args.n:
            results = [run_variant(Path(tmp), key, n, args.port, args.image, args.timeout) for key in args.variants]
            everything.extend(results)
            print(table(results) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1, default=lambda o: dict(o) if isinstance(o, Counter) else str(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
