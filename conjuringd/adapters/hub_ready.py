"""Wait until a student can log in to the hub a running conjuringd serves; print URL and login.

Usage: python -m conjuringd.adapters.hub_ready STATUS_JSON USERS_CSV [--passwords FILE] [--timeout S]
Reads the daemon's status.json for `hub_urls`, logs in over HTTP (xsrf, POST
/hub/login) as the first non-admin user of users.csv and waits for their lab.
A `(generated)` password is looked up in the box's generated-passwords.json
(`--passwords`, in the state folder's secrets/), which the daemon writes on first start.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from conjuringd.adapters.hub_http import HubSession, health
from conjuringd.config.users import GENERATED

TRUE = {"1", "y", "yes", "t", "true"}


def first_student(users_csv: Path) -> tuple[str, str]:
    rows = list(csv.reader(users_csv.read_text().splitlines()))[1:]
    rows = [[cell.strip() for cell in row] for row in rows if row and row[0].strip() and not row[0].startswith("#")]
    students = [row for row in rows if len(row) < 3 or row[2].lower() not in TRUE]
    name, password = (students or rows)[0][:2]
    return name, password


def candidate_urls(status_file: Path, port: int) -> list[str]:
    try:
        status = json.loads(status_file.read_text())
    except (OSError, ValueError):
        status = {}
    return list(status.get("hub_urls") or []) + [f"http://127.0.0.1:{port}"]


def generated_password(passwords: Path | None, name: str) -> str:
    try:
        return str(json.loads(passwords.read_text()).get(name, "")) if passwords else ""
    except (OSError, ValueError, AttributeError):
        return ""


def wait_ready(status_file: Path, users_csv: Path, timeout: float, port: int = 8989,
               passwords: Path | None = None) -> tuple[str, str, str] | None:
    name, written = first_student(users_csv)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        password = generated_password(passwords, name) if written == GENERATED else written
        for url in candidate_urls(status_file, port):
            if not password or not health(url):
                continue
            session = HubSession(url, timeout=30)
            if session.login(name, password) == 302 and session.wait_lab(name, 240) == 200:
                return url, name, password
        time.sleep(2)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="wait until a student can log in")
    parser.add_argument("status_json", type=Path)
    parser.add_argument("users_csv", type=Path)
    parser.add_argument("--passwords", type=Path, default=None, help="the box's generated-passwords.json")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--port", type=int, default=8989)
    args = parser.parse_args(argv)
    ready = wait_ready(args.status_json, args.users_csv, args.timeout, args.port, args.passwords)
    if ready is None:
        print(f"hub not ready after {args.timeout:.0f}s", file=sys.stderr)
        return 1
    url, name, password = ready
    print(f"\n=== conjuring hub is serving at {url}\n=== log in as {name} / {password}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
