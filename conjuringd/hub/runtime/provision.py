#!/usr/bin/python3
"""Make the container's accounts match /run/conjuring/secrets/users.json. Idempotent.

Runs as root inside the hub container: at start (from the entrypoint) and live
(`docker exec ... provision.py --api`). Accounts it manages carry the GECOS
marker "conjuring"; others are never touched. Their system passwords stay
locked ("!" in /etc/shadow): users.csv's passwords are checked by JupyterHub
alone (jupyterhub_config.py), so no student can `su` to another with the other's
class password, and no hash of a password is kept in the container.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

SECRETS = Path(os.environ.get("CONJURING_SECRETS", "/run/conjuring/secrets"))
SKEL = Path("/srv/conjuring/home_default")
HOMES = Path("/home")
STATE = Path("/var/lib/conjuring-provision.json")
SHADOW = Path("/etc/shadow")
MARK = "conjuring"
STUDENTS_GROUP = "conjuring-students"
API = "http://127.0.0.1:8081/hub/api"


def load_state():
    try:
        return {"locked": list(json.loads(STATE.read_text()).get("locked", []))}  # older states also held password digests
    except (OSError, ValueError, AttributeError):
        return {"locked": []}


def save_state(state):
    tmp = STATE.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # root-only from its first byte
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(state))
    os.replace(tmp, STATE)


def ensure_account(user, shell="/bin/bash", home=None):
    name, uid = user["name"], int(user["uid"])
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is not None:
        return entry.pw_gecos.split(",")[0] == MARK
    subprocess.run(["groupadd", "-f", "-g", str(uid), name], check=True)
    subprocess.run(
        ["useradd", "-u", str(uid), "-g", str(uid), "-M", "-d", home or str(HOMES / name), "-s", shell, "-c", MARK, name],
        check=True,
    )
    return True


def ensure_home(user):
    home, uid = HOMES / user["name"], int(user["uid"])
    if not home.exists():
        if SKEL.is_dir():
            shutil.copytree(SKEL, home, symlinks=True)
        else:
            home.mkdir(parents=True)
        for root, dirs, files in os.walk(home):
            for item in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.lchown(item, uid, uid)
                if not os.path.islink(item):
                    os.chmod(item, os.stat(item).st_mode | 0o600)
        os.chmod(home, 0o750)
    link = home / "shared"
    if not os.path.lexists(link):
        os.symlink("/shared", link)
        os.lchown(link, uid, uid)


def lock_passwords(names):
    """Make the system password of each of `names` exactly "!" (locked, no hash kept); returns those changed."""
    fields = {}
    for line in SHADOW.read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            fields[parts[0]] = parts[1]
    changed = [name for name in sorted(names) if name in fields and fields[name] != "!"]
    for name in changed:
        subprocess.run(["usermod", "-p", "!", name], check=True)
    return changed


def set_students_group(names):
    """The fork server's group (conjuring_forkserver.GROUP): exactly the class may start kernels there."""
    subprocess.run(["groupadd", "-f", "-r", STUDENTS_GROUP], check=True)
    subprocess.run(["gpasswd", "-M", ",".join(sorted(names)), STUDENTS_GROUP], check=True, capture_output=True)


def managed_names():
    return {e.pw_name for e in pwd.getpwall() if e.pw_gecos.split(",")[0] == MARK}


def api(method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Authorization", f"token {token}")
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError):
        return 0, None  # the hub is not up (yet): it reads the users file at start


def sync_api(users, removed, token):
    done = {"admin_changed": [], "servers_stopped": []}
    for user in users:
        status, model = api("GET", f"/users/{user['name']}", token)
        if status == 200 and bool(model.get("admin")) != bool(user["admin"]):
            api("PATCH", f"/users/{user['name']}", token, {"admin": bool(user["admin"])})
            done["admin_changed"].append(user["name"])
    for name in removed:
        status, _ = api("DELETE", f"/users/{name}/server", token)
        if status in (202, 204):
            done["servers_stopped"].append(name)
    return done


def main(argv):
    spec = json.loads((SECRETS / "users.json").read_text())
    users, probe = spec["users"], spec.get("probe")
    state = load_state()
    wanted = {u["name"] for u in users}
    summary = {"created": [], "locked": [], "unlocked": []}
    for user in users:
        if not pwd_exists(user["name"]):
            summary["created"].append(user["name"])
        if ensure_account(user):
            ensure_home(user)
    if probe:
        ensure_account(probe, shell="/usr/sbin/nologin", home="/nonexistent")
    accounts = users + ([probe] if probe else [])
    summary["passwords_locked"] = len(lock_passwords(u["name"] for u in accounts))
    removed = sorted(managed_names() - wanted - ({probe["name"]} if probe else set()))
    for name in removed:
        if name not in state["locked"]:
            subprocess.run(["usermod", "-L", "-e", "1", name], check=True)
            state["locked"].append(name)
            summary["locked"].append(name)
    for name in [n for n in state["locked"] if n in wanted]:
        subprocess.run(["usermod", "-e", "", name], check=True)  # no longer expired; the password stays locked
        state["locked"].remove(name)
        summary["unlocked"].append(name)
    save_state(state)
    set_students_group(u["name"] for u in accounts)
    token_file = SECRETS / "service-token"
    if "--api" in argv and token_file.exists():
        summary.update(sync_api(users, removed, token_file.read_text().strip()))
    print(json.dumps(summary))
    return 0


def pwd_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
