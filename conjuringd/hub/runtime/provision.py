#!/usr/bin/python3
"""Make the container's accounts match /run/conjuring/secrets/users.json. Idempotent.

Runs as root inside the hub container: at start (from the entrypoint) and live
(`docker exec ... provision.py --api`). Accounts it manages carry the GECOS
marker "conjuring"; others are never touched. Passwords go to chpasswd on
stdin only and are never printed.
"""

import hashlib
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
MARK = "conjuring"
API = "http://127.0.0.1:8081/hub/api"


def load_state():
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {"passwords": {}, "locked": []}


def save_state(state):
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.chmod(tmp, 0o600)
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


def fingerprint(user):
    return hashlib.sha256(f"{user['name']}\0{user['password']}".encode()).hexdigest()


def set_passwords(users, state):
    changed = [u for u in users if state["passwords"].get(u["name"]) != fingerprint(u)]
    if changed:
        data = "".join(f"{u['name']}:{u['password']}\n" for u in changed)
        subprocess.run(["chpasswd"], input=data.encode(), check=True)
        for u in changed:
            state["passwords"][u["name"]] = fingerprint(u)
    return [u["name"] for u in changed]


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
    summary["passwords_set"] = len(set_passwords(accounts, state))
    removed = sorted(managed_names() - wanted - ({probe["name"]} if probe else set()))
    for name in removed:
        if name not in state["locked"]:
            subprocess.run(["usermod", "-L", "-e", "1", name], check=True)
            state["locked"].append(name)
            summary["locked"].append(name)
    for name in [n for n in state["locked"] if n in wanted]:
        subprocess.run(["usermod", "-U", "-e", "", name], check=True)
        state["locked"].remove(name)
        summary["unlocked"].append(name)
    save_state(state)
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
