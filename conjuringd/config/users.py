"""users.csv: `name,password,admin`, the first row a header ignored whatever it says.

Compatible with the original Conjuring format: rows may have only two columns,
admin is true for `1 y yes t true` in any case (also accepted as false:
blank, `0 n no f false`). Fields are CSV (a password containing a comma must be
quoted); whitespace around each field is stripped, as the original's shell
`read` did. Passwords may contain any printable character including ':'
(chpasswd splits its `name:password` lines at the first colon only), but no
control character (newline, NUL, tab, ...): they cannot be typed in a login
form and would corrupt the line-based files passwords travel in.

The password `(generated)` asks the box for one: each box makes its own on first
use and keeps it (conjuringd.passwords; `conjuringctl status --show-passwords`).
The shipped custom/users.csv uses it, so a box is never served with passwords
printed in a public repository. Passwords that are such public examples (ours
before, the original Conjuring's) get a warning.
"""

from __future__ import annotations

import csv
import io
import re

from conjuringd.config.files import decode_lines
from conjuringd.config.model import User
from conjuringd.config.problems import Problem, error, warning

NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TRUE = frozenset({"1", "y", "yes", "t", "true"})
FALSE = frozenset({"", "0", "n", "no", "f", "false"})

# Accounts and groups of the hub image: Debian 12 base-passwd's passwd.master
# (root daemon bin sys sync games man lp mail news uucp proxy www-data backup
# list irc _apt nobody) and group.master, the accounts systemd, D-Bus, polkit,
# sshd and friends add on Debian/Ubuntu hosts and images, plus names with a
# special meaning for the hub (its service user, Jupyter's default user, ...).
SYSTEM_ACCOUNTS = frozenset(
    """root daemon bin sys sync games man lp mail news uucp proxy www-data backup
    list irc gnats nobody _apt systemd-network systemd-resolve systemd-timesync
    systemd-coredump messagebus sshd polkitd tss avahi dnsmasq statd uuidd
    ubuntu debian""".split()
)
SYSTEM_GROUPS = frozenset(
    """adm tty disk kmem dialout fax voice cdrom floppy tape sudo audio dip
    operator src shadow utmp video sasl plugdev staff users nogroup netdev
    input render kvm crontab docker ssh systemd-journal ssl-cert sgx""".split()
)
HUB_NAMES = frozenset({"jovyan", "conjuring", "admin", "jupyterhub", "hub"})
GENERATED = "(generated)"
# Passwords printed in public repositories: conjuringd's custom/users.csv before it used
# GENERATED, and the original Conjuring's custom/users.csv (foo and bar, both "bar").
PUBLIC_EXAMPLES = frozenset({"change-me-1", "change-me-2", "change-me-teacher", "bar"})
RESERVED = SYSTEM_ACCOUNTS | SYSTEM_GROUPS | HUB_NAMES


def parse_users(data: bytes, file: str) -> tuple[tuple[User, ...], list[Problem]]:
    lines, problems = decode_lines(data, file)
    users: list[User] = []
    first_line: dict[str, int] = {}
    header_seen = False
    for line, row in _rows(lines, file, problems):
        if not any(field.strip() for field in row):
            continue  # blank line, or a spreadsheet's empty row ",,"
        if not header_seen:
            header_seen = True
            continue
        key = row[0].strip().lower()
        if key and key in first_line and len(row) > 1:
            problems.append(error(file, line, f"duplicate user '{_show(row[0].strip())}' (first on line {first_line[key]})"))
            continue
        first_line.setdefault(key, line)
        user = _parse_row(row, line, file, problems)
        if user is not None:
            users.append(user)
    if not users and not any(p.line for p in problems):
        problems.append(error(file, 0, "no users: add one row per student after the header row"))
    return tuple(users), problems


def _rows(lines: list[str], file: str, problems: list[Problem]):
    """(first line of the record, fields) for every CSV record."""
    text = "\n".join(lines)
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(error(file, reader.line_num, f"cannot read this CSV row: {exc}"))
            return
        yield start, row
        start = reader.line_num + 1


def _parse_row(row: list[str], line: int, file: str, problems: list[Problem]) -> User | None:
    fields = [field.strip() for field in row]
    if len(fields) == 1:
        hint = next((f": separate the fields with ',' not {sep!r}" for sep in (";", "\t") if sep in fields[0]), "")
        problems.append(error(file, line, f"expected name,password[,admin] but found one field (no comma){hint}"))
        return None
    if len(fields) > 3:
        problems.append(
            error(
                file,
                line,
                f"expected name,password[,admin] but found {len(fields)} fields "
                "(a password containing ',' must be quoted: \"pass,word\")",
            )
        )
        return None
    name, password = fields[0], fields[1]
    admin_text = fields[2] if len(fields) == 3 else ""
    found = len(problems)
    _check_name(name, line, file, problems)
    _check_password(name, password, line, file, problems)
    admin = _parse_admin(admin_text, line, file, problems)
    if len(problems) > found:
        return None
    if password == GENERATED:
        return User(name=name, password="", admin=admin, line=line, generated=True)
    if password in PUBLIC_EXAMPLES:
        problems.append(warning(file, line, f"the password of '{name}' is an example printed in a public repository: "
                                f"anyone can log in with it; choose another, or write {GENERATED} to have the box make one"))
    return User(name=name, password=password, admin=admin, line=line)


def _check_name(name: str, line: int, file: str, problems: list[Problem]) -> None:
    if not name:
        problems.append(error(file, line, "empty user name"))
    elif not NAME_RE.fullmatch(name):
        problems.append(error(file, line, f"invalid user name '{_show(name)}': {_name_hint(name)}"))
    elif name in RESERVED:
        problems.append(error(file, line, f"user name '{name}' is reserved (a system account or group of the hub)"))


def _name_hint(name: str) -> str:
    if len(name) > 32:
        return "at most 32 characters"
    if name.lower() != name and NAME_RE.fullmatch(name.lower()):
        return f"use lowercase letters ('{name.lower()}')"
    return "use lowercase letters, digits, '_' and '-', starting with a letter"


def _check_password(name: str, password: str, line: int, file: str, problems: list[Problem]) -> None:
    who = f"'{_show(name)}'" if name else "this row"
    if not password:
        problems.append(error(file, line, f"empty password for {who}"))
    elif "\n" in password or "\r" in password:
        problems.append(error(file, line, f"the password of {who} contains a line break"))
    elif "\0" in password:
        problems.append(error(file, line, f"the password of {who} contains a NUL character"))
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        problems.append(error(file, line, f"the password of {who} contains a control character"))


def _parse_admin(text: str, line: int, file: str, problems: list[Problem]) -> bool:
    value = text.lower()
    if value in TRUE:
        return True
    if value not in FALSE:
        problems.append(
            error(file, line, f"admin must be one of 1, y, yes, t, true (or blank for no), not '{_show(text)}'")
        )
    return False


def _show(text: str) -> str:
    """A field for a message: control characters escaped, long text cut."""
    shown = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return shown if len(shown) <= 40 else shown[:37] + "..."
