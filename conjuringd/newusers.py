"""`conjuringctl users new N`: a users.csv for a class, with random passwords that are easy to read aloud.

Names are `<prefix><number>`, numbered from 1 and zero-padded to the width of N
so they sort (student01 ... student30), then an optional admin row. Passwords
come from conjuringd.passwords.make_password (the secrets module; no 0/o, 1/l/i).
The text is checked with the same parser the daemon uses before it is written,
so what this writes always validates. Needs nothing of the daemon: it runs on
the teacher's laptop like `conjuringctl validate`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from conjuringd.config.problems import Severity
from conjuringd.config.users import parse_users
from conjuringd.passwords import make_password

HEADER = "name,password,admin"
MAX_USERS = 1000
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class NewUsersError(ValueError):
    """The arguments cannot make a valid users.csv; the message says why."""


def users_csv(count: int, prefix: str = "student", admin: str = "",
              password: Callable[[], str] = make_password) -> str:
    """users.csv text: `count` students named prefix1..N (zero-padded), then `admin` as an admin if given."""
    if not 1 <= count <= MAX_USERS:
        raise NewUsersError(f"the number of users must be 1 to {MAX_USERS}, not {count}")
    width = len(str(count))
    rows = [(f"{prefix}{i:0{width}d}", password(), "") for i in range(1, count + 1)]
    if admin:
        rows.append((admin, password(), "yes"))
    text = "\n".join([HEADER, *(",".join(row) for row in rows)]) + "\n"
    users, problems = parse_users(text.encode(), "users.csv")
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        raise NewUsersError("; ".join(p.message for p in errors[:3]))
    for user, (name, _, _) in zip(users, rows):
        if user.name != name:  # the daemon would fold it: say so now
            raise NewUsersError(f"user names must be lower case: '{name}' would be '{user.name}'")
    return text


def write_new(path: Path, text: str, force: bool) -> None:
    """Create `path` readable by its owner only (it holds passwords); an existing file only with `force`."""
    if force and path.is_file():
        path.unlink()  # a new file, so that it is created owner-only whatever the old one's mode was
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def cmd_users_new(args: argparse.Namespace) -> int:
    try:
        text = users_csv(args.count, args.prefix, args.admin or "")
    except NewUsersError as exc:
        print(f"conjuringctl users new: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output is None or str(args.output) == "-":
        sys.stdout.write(text)
        return EXIT_OK
    try:
        write_new(args.output, text, args.force)
    except FileExistsError:
        print(f"{args.output}: exists already (use --force to replace it)", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"{args.output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.count + bool(args.admin)} users to {args.output}", file=sys.stderr)
    return EXIT_OK


def register(sub) -> None:
    """Add `users new` to conjuringctl's subcommands."""
    users = sub.add_parser("users", help="make a users.csv").add_subparsers(dest="users_command", required=True)
    p = users.add_parser("new", help="a users.csv for N students with random, easy-to-read passwords")
    p.add_argument("count", type=int, metavar="N", help="how many students")
    p.add_argument("--prefix", default="student", help="name prefix, numbered from 1 (default: student)")
    p.add_argument("--admin", default="", metavar="NAME", help="also an admin (teacher) account of that name")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="write to FILE (default: stdout)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=cmd_users_new)
