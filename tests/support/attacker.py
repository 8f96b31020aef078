"""What student A runs in the hub container, as code for her own kernel (and a process she leaves running).

Each *_CODE string is sent to A's kernel (tests/support/kernel.py execute) after its placeholders are
replaced with repr()s; most print one JSON report.
Secrets are handed to the hunt only as (label, prefix, length, sha256): A's memory never holds one itself,
so finding one there means it leaked.
"""

from __future__ import annotations

HUNT_CODE = r"""
import hashlib, json, os, stat
WANTED = WANTED_LIST
OVERLAP = max(length for _, _, length, _ in WANTED)
found, stats = {}, {"mem_bytes": 0, "mem_pids": [], "mem_refused": {}, "files": 0, "file_bytes": 0, "proc_files": 0}
def look(where, data):
    for label, prefix, length, digest in WANTED:
        at = data.find(prefix)
        while at != -1:
            if hashlib.sha256(data[at:at + length]).hexdigest() == digest:
                found.setdefault(label, set()).add(where)
            at = data.find(prefix, at + 1)
def stream(where, read_at, start, end):
    tail, pos = b"", start
    while pos < end:
        try:
            block = read_at(pos, min(8 << 20, end - pos))
        except (OSError, ValueError, OverflowError):
            return pos - start
        if not block:
            break
        look(where, tail + block)
        tail, pos = (tail + block)[-OVERLAP:], pos + len(block)
    return pos - start
def memory(pid):
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError as exc:
        stats["mem_refused"][pid] = type(exc).__name__
        return
    try:
        command = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")[:70].decode(errors="replace")
    except OSError:
        command = "?"
    try:
        for line in maps:
            parts = line.split()
            name = parts[5] if len(parts) > 5 else "anon"
            if parts[1][0] != "r" or name in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            read_at = lambda pos, size: os.pread(mem, size, pos)
            stats["mem_bytes"] += stream(f"memory of pid {pid} {command} ({name})", read_at, start, end)
        stats["mem_pids"].append(pid)
    finally:
        os.close(mem)
def whole_file(path, where=None):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) and where is None:
            return False
        size = stream(where or path, lambda pos, n: os.pread(fd, n, pos), 0, 1 << 40)
    finally:
        os.close(fd)
    stats["file_bytes"] += size
    return True
def open_files(pid):
    # files her processes hold open, deleted ones and memfds (an environment passed by SCM_RIGHTS) too
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            regular = stat.S_ISREG(os.stat(f"/proc/{pid}/fd/{fd}").st_mode)
        except OSError:
            continue
        if regular:
            stats["open_files"] += whole_file(f"/proc/{pid}/fd/{fd}", f"fd {fd} of pid {pid} ({target})")
pids = [p for p in os.listdir("/proc") if p.isdigit()]
stats["pids_visible"], stats["open_files"] = len(pids), 0
for pid in pids:
    memory(pid)
    open_files(pid)
    for part in ("environ", "cmdline", "status", "comm", "io", "sched", "wchan"):
        stats["proc_files"] += whole_file(f"/proc/{pid}/{part}", f"/proc/{pid}/{part}")
for root in ("/", "/dev/shm", "/dev/mqueue") if WALK_FILES else ():
    for top, dirs, names in os.walk(root, onerror=lambda e: None):
        if top == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
        for name in names:
            stats["files"] += whole_file(os.path.join(top, name))
stats["readable"] = [p for p in ("/srv/jupyterhub/jupyterhub.sqlite", "/etc/shadow", "/run/conjuring/secrets/users.json",
                     "/run/conjuring/hub/srv/jupyterhub_config.py") if os.access(p, os.R_OK)]
print(json.dumps({"found": {k: sorted(v)[:8] for k, v in found.items()}, **stats}))
"""

# one listener process per block of ports: a process may hold only RLIMIT_NOFILE sockets (20000 here)
LISTENER_CHILD = r"""
import errno, json, resource, selectors, socket, sys
host, low, high, hits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nA-was-here"
selector, bound, refused = selectors.DefaultSelector(), 0, {}
for port in range(low, high):
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        refused[name] = refused.get(name, 0) + 1
        continue
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ)
    bound += 1
print(json.dumps({"key": f"{host} {low}-{high - 1}", "bound": bound, "refused": refused}), flush=True)
while True:
    for key, _ in selector.select():
        try:
            conn, _ = key.fileobj.accept()
        except OSError:
            continue
        conn.settimeout(2)
        try:
            asked = conn.recv(4096)
            conn.sendall(REPLY)
        except OSError:
            asked = b"?"
        conn.close()
        with open(hits, "a") as log:
            log.write(json.dumps(f"{key.fileobj.getsockname()}: {asked[:160]!r}") + "\n")
"""

LISTEN_CODE = r"""
import json, os, subprocess, sys, tempfile
a_hits = tempfile.mktemp(prefix="a-was-here-")
a_children, a_report = [], {"bound": {}, "refused": {}}
for host in ("0.0.0.0", "127.0.0.1"):
    for low, high in ((200, 1024), (10000, 15000), (15000, 20000), (20000, 25000), (25000, 30000)):
        a_children.append(subprocess.Popen([sys.executable, "-c", CHILD, host, str(low), str(high), a_hits],
                                           stdout=subprocess.PIPE, text=True))
for child in a_children:
    said = json.loads(child.stdout.readline())
    a_report["bound"][said["key"]], a_report["refused"][said["key"]] = said["bound"], said["refused"]
print(json.dumps(a_report))
""".replace("CHILD", repr(LISTENER_CHILD))

LISTEN_STOP_CODE = r"""
import json, os
for child in globals().get("a_children", []):
    child.kill()
    child.wait()
a_children = []
print(json.dumps(open(a_hits).read().splitlines() if os.path.exists(globals().get("a_hits", "")) else []))
"""

FORKSERVER_CODE = r"""
import json, os, socket, sys, time, resource
SOCK, OTHER, OTHER_UID = "/run/conjuring-forkserver.sock", OTHER_NAME, OTHER_ID
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
report, outages, null = {}, [], os.open(os.devnull, os.O_RDWR)
def connect(patient=True):
    gone = None
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(10)
        try:
            sock.connect(SOCK)
        except BlockingIOError:  # its backlog is full: it is busy, not gone
            sock.close()
            time.sleep(0.05)
            continue
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            sock.close()
            gone = gone or (time.monotonic(), f"{type(exc).__name__} during {STEP[0]}")
            if not patient or time.monotonic() - gone[0] > 30:
                raise
            time.sleep(0.1)
            continue
        if gone:
            outages.append(f"{gone[1]}, for {time.monotonic() - gone[0]:.1f} s")
        return sock
def answer(sock):
    try:
        data, fds, _, _ = socket.recv_fds(sock, 65536, 8)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    for fd in fds:
        os.close(fd)
    return data[:300].decode(errors="replace") or "(closed)"
def ask(message, fds=()):
    with connect() as sock:
        try:
            socket.send_fds(sock, [message], list(fds)) if fds else sock.send(message)
        except OSError as exc:
            return f"send: {type(exc).__name__}: {exc}"
        return answer(sock)
def big():
    sizes, biggest = {}, 0
    for size in (100 << 20, 16 << 20, 1 << 20, 256 << 10, 208 << 10, 200 << 10, 128 << 10, 64 << 10):
        sizes[size] = ask(json.dumps({"kind": "kernel", "argv": [], "env": {"X": "x" * size}}).encode()[:size])[:80]
        biggest = biggest or (size if not sizes[size].startswith("send:") else 0)
    held = []
    for _ in range(200):  # many max-size messages, all sent before any is answered
        held.append(connect())
        try:
            held[-1].send(b"{" * biggest)
        except OSError as exc:
            sizes["many"] = f"{type(exc).__name__}: {exc}"
    sizes["answers to many"] = sorted({answer(sock)[:60] for sock in held})
    for sock in held:
        sock.close()
    return {"biggest": biggest, **{str(k): v for k, v in sizes.items()}}
KERNEL = json.dumps({"kind": "kernel", "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "/tmp/k.json"],
                     "env": {}, "cwd": "/"}).encode()
def fds():
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1000)]
    said = [ask(KERNEL, spare[i:i + 250])[:80]
            for i in range(0, 1000, 250)]
    for fd in spare:
        os.close(fd)
    return said
def connections():
    held, said = [connect()], {}
    try:
        for _ in range(1199):
            held.append(connect(patient=False))
    except OSError as exc:
        said["refused"] = f"after {len(held)}: {type(exc).__name__}: {exc}"
    time.sleep(2)
    said["while held"] = ask(b'{"kind":"nothing"}')[:120]
    for sock in held:
        sock.close()
    # ana's own requests are dropped while the fork server still counts her silent connections against her
    # per-account cap; once it has seen them close she is answered again (the probe then checks it still is)
    closed = time.monotonic()
    while time.monotonic() - closed < 10 and not ask(b'{"kind":"nothing"}').startswith('{"error"'):
        time.sleep(0.05)
    said["own requests answered again after"] = f"{time.monotonic() - closed:.2f} s"
    return {"held": len(held), **said}
def kernel_as_other():
    lifeline_r, lifeline_w = os.pipe()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", f"/tmp/kernel-of-{OTHER}.json"]
    request = {"kind": "kernel", "argv": argv, "env": {"HOME": f"/home/{OTHER}", "USER": OTHER}, "cwd": f"/home/{OTHER}",
               "user": OTHER, "uid": OTHER_UID, "gid": OTHER_UID}
    said, uids = ask(json.dumps(request).encode(), [null, null, null, lifeline_r]), []
    if '"pid"' in said:
        pid = json.loads(said)["pid"]
        for _ in range(50):
            try:
                uids.append(int(open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[0]))
            except (OSError, IndexError):
                break
            if uids[-1] != 0:
                break
            time.sleep(0.1)
    os.close(lifeline_w)
    os.close(lifeline_r)
    by_client = "refused"
    try:  # the same through the hub's own client, whatever its protocol: header, argv and env naming the other
        import conjuring_forkclient
        env = {"HOME": f"/home/{OTHER}", "USER": OTHER, "LOGNAME": OTHER}
        child = conjuring_forkclient.spawn("kernel", argv, env, f"/home/{OTHER}", (null, null, null), user=OTHER)
        for _ in range(50):
            try:
                uids.append(int(open(f"/proc/{child.pid}/status").read().split("Uid:")[1].split()[0]))
            except (OSError, IndexError):
                break
            if uids[-1] != 0:
                break
            time.sleep(0.1)
        by_client = f"pid {child.pid}"
        child.close()
    except Exception as exc:
        by_client = f"{type(exc).__name__}: {exc}"[:200]
    return {"answer": said[:200], "by client": by_client, "uids": sorted(set(uids))}
def server():
    request = {"kind": "server", "argv": ["jupyterhub-singleuser"], "env": {}, "cwd": "/", "user": OTHER}
    said = {"raw": ask(json.dumps(request).encode(), [null, null, null])[:200]}
    try:
        import conjuring_forkclient
        conjuring_forkclient.spawn("server", ["jupyterhub-singleuser"], {}, "/", (null, null, null), user=OTHER)
        said["client"] = "started"
    except Exception as exc:
        said["client"] = f"{type(exc).__name__}: {exc}"[:200]
    return said
def probe():
    # wait until the fork server answers a request again (with its refusal); note how long it did not
    since, bad = time.monotonic(), None
    while time.monotonic() - since < 30:
        said = ask(b'{"kind": "nothing"}')
        if said.startswith('{"error"'):
            break
        bad = bad or said
        time.sleep(0.1)
    if bad:
        outages.append(f"{bad[:60]} at {STEP[0]}, for {time.monotonic() - since:.1f} s")
STEP = [""]
for STEP[0], attack in (("nested list", lambda: ask(b"[" * 200000)),
                        ("nested dict", lambda: ask(b'{"kind":' * 20000 + b'"kernel"' + b"}" * 20000)),
                        ("empty argv", lambda: ask(KERNEL.replace(b'"argv": [', b'"argv": [], "x": ['), [null] * 4)),
                        ("big messages", big), ("1000 fds", fds), ("1200 connections", connections),
                        ("kernel as other", kernel_as_other), ("server", server)):
    try:
        report[STEP[0]] = attack()
    except OSError as exc:
        report[STEP[0]] = f"failed: {type(exc).__name__}: {exc}"
    STEP[0] = f"the first request after {STEP[0]}"
    probe()
report["outages"] = outages
print(json.dumps(report))
"""

# a process A leaves running (it outlives her kernel and server): whenever another student's process appears (a
# server or kernel just forked), it asks the fork server for a kernel of A's own at once, with a tiny request, and
# keeps it: that kernel's memory is a copy of the fork server's heap right after the other student's request
SNIFFER = r"""
import json, os, sys, time
import conjuring_forkclient
stop, out, null = sys.argv[1], sys.argv[2], os.open(os.devnull, os.O_RDWR)
sniffed, seen = [], set(os.listdir("/proc"))
while not os.path.exists(stop):
    now = set(os.listdir("/proc"))
    for pid in sorted(p for p in now - seen if p.isdigit() and len(sniffed) < 8):
        try:
            uid = int(open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[0])
        except (OSError, IndexError):
            continue
        if uid not in (0, os.getuid()):
            argv = [sys.executable, "-m", "ipykernel_launcher", "-f", f"/tmp/sniff-{os.getuid()}-{pid}.json"]
            sniffed.append(conjuring_forkclient.spawn("kernel", argv, {"HOME": os.environ["HOME"]}, "/tmp",
                                                      (null, null, null)))
    seen = now
    time.sleep(0.02)
alive = sum(kernel.poll() is None for kernel in sniffed)
for kernel in sniffed:
    kernel.close()
with open(out, "w") as file:
    json.dump([len(sniffed), alive], file)
"""

SNIFF_CODE = r"""
import os, subprocess, sys
a_sniff = f"/tmp/a-sniff-{os.getuid()}"
for _old in (a_sniff + ".stop", a_sniff + ".json"):
    if os.path.exists(_old):
        os.remove(_old)
subprocess.Popen([sys.executable, "-c", SNIFFER, a_sniff + ".stop", a_sniff + ".json"], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(a_sniff + ".log", "w"))
""".replace("SNIFFER", repr(SNIFFER))

SNIFF_STOP_CODE = r"""
import os, time
a_sniff = f"/tmp/a-sniff-{os.getuid()}"
open(a_sniff + ".stop", "w").close()
for _ in range(100):
    if os.path.exists(a_sniff + ".json"):
        break
    time.sleep(0.1)
print(open(a_sniff + ".json").read() if os.path.exists(a_sniff + ".json") else open(a_sniff + ".log").read()[-500:])
"""

SU_CODE = r"""
import json, os, pty, select, time
def su(target, password):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("su", ["su", "-c", "id", target])
    out, sent, deadline = b"", False, time.monotonic() + 20
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not sent and b"assword" in out:
            os.write(fd, password.encode() + b"\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    return {"output": out.decode(errors="replace"), "code": os.waitstatus_to_exitcode(status), "sent": sent}
print(json.dumps(su(TARGET, PASSWORD)))
"""

