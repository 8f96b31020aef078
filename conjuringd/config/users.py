"""users.csv: `name,password,admin`, the first row a header ignored whatever it says.

Accepts everything the original Conjuring accepted (its csv2useradd.sh took
columns 1-3 of each row and ran useradd): rows of two columns (its first
versions, and its generator src/create_users.py, whose rows include a user named
`admin`), further columns (ignored, with a warning), admin true for
`1 y yes t true` in any case and anything else not admin (a warning for values
other than blank, `0 n no f false`), names with dots (jane.doe), and upper-case
names, folded to lower case as JupyterHub folds them at login (a warning).
Errors remain for what cannot work: duplicates after folding, names useradd
refuses or that would break a later step (NAME_RE), system and hub account
names, empty passwords.

Fields are CSV (a password containing a comma must be quoted); whitespace
around each field is stripped, as the original's shell `read` did. Passwords
may contain any printable character including ':' (chpasswd splits its
`name:password` lines at the first colon only), but no control character
(newline, NUL, tab, ...): they cannot be typed in a login form and would
corrupt the line-based files passwords travel in.

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

# What useradd on Debian and Ubuntu creates and every later step handles (home folders, URLs, backup
# file names on a FAT stick): ASCII letters (folded to lower case), digits, '_', '.' and '-', not first
# '-' or '.', not last '.', not only digits (chown would read it as a UID), at most 32 characters.
NAME_RE = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,31}")
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
# "admin" is not reserved: the original Conjuring's generator (src/create_users.py) writes a user named so.
HUB_NAMES = frozenset({"jovyan", "conjuring", "conjuring-probe", "jupyterhub", "hub"})
GENERATED = "(generated)"
# Passwords printed in public repositories: conjuringd's custom/users.csv before it used
# GENERATED, and the original Conjuring's custom/users.csv (foo and bar, both "bar").
PUBLIC_EXAMPLES = frozenset({"change-me-1", "change-me-2", "change-me-teacher", "bar"})
RESERVED = SYSTEM_ACCOUNTS | SYSTEM_GROUPS | HUB_NAMES


def parse_users(data: bytes, file: str) -> tuple[tuple[User, ...], list[Problem]]:
    lines, problems = decode_lines(data, file)
    users: list[User] = []
    first_line: dict[str, int] = {}
    lenient = _Lenient()
    header_seen = False
    for line, row in _rows(lines, file, problems):
        if not any(field.strip() for field in row):
            continue  # blank line, or a spreadsheet's empty row ",,"
        if not header_seen:
            header_seen = True
            continue
        key = row[0].strip().lower()
        if key and key in first_line and len(row) > 1:
            raw = row[0].strip()
            folded = f", '{_show(key)}' in lower case" if raw != key else ""
            problems.append(error(file, line, f"duplicate user '{_show(raw)}'{folded} (first on line {first_line[key]})"))
            continue
        first_line.setdefault(key, line)
        user = _parse_row(row, line, file, problems, lenient)
        if user is not None:
            users.append(user)
    problems.extend(lenient.warnings(file))
    if not users and not any(p.line for p in problems):
        problems.append(error(file, 0, "no users: add one row per student after the header row"))
    return tuple(users), problems


class _Lenient:
    """What the original Conjuring let pass and conjuringd accepts too, said once per kind (a class list
    exported with an e-mail column would otherwise give one warning per student)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[int, str]]] = {"extra": [], "admin": [], "case": []}

    def note(self, kind: str, line: int, detail: str) -> None:
        self.seen[kind].append((line, detail))

    def merge(self, other: "_Lenient") -> None:
        for kind, rows in other.seen.items():
            self.seen[kind].extend(rows)

    def warnings(self, file: str) -> list[Problem]:
        found = []
        for kind, rows in self.seen.items():
            if rows:
                details = list(dict.fromkeys(detail for _, detail in rows))  # each different one once
                examples = ", ".join(details[:3]) + (", ..." if len(details) > 3 else "")
                found.append(warning(file, rows[0][0], _LENIENT[kind].format(examples=examples) + _lines(rows)))
        return found


_LENIENT = {
    "extra": "columns after the third are ignored ({examples}), as the original Conjuring did; "
             "a password containing ',' must be quoted: \"pass,word\"",
    "admin": "admin values other than 1, y, yes, t, true (or blank, 0, n, no, f, false) mean not admin ({examples})",
    "case": "user names are folded to lower case, as JupyterHub does at login ({examples}); "
            "students may type them either way",
}


def _lines(rows: list[tuple[int, str]]) -> str:
    if len(rows) == 1:
        return ""
    shown = ", ".join(str(line) for line, _ in rows[:10]) + (", ..." if len(rows) > 10 else "")
    return f" [{len(rows)} rows: line {shown}]"


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


def _parse_row(row: list[str], line: int, file: str, problems: list[Problem], lenient: _Lenient) -> User | None:
    fields = [field.strip() for field in row]
    if len(fields) == 1:
        hint = next((f": separate the fields with ',' not {sep!r}" for sep in (";", "\t") if sep in fields[0]), "")
        problems.append(error(file, line, f"expected name,password[,admin] but found one field (no comma){hint}"))
        return None
    notes = _Lenient()
    if len(fields) > 3:
        notes.note("extra", line, f"{len(fields)} fields")
    name, password = fields[0], fields[1]
    admin_text = fields[2] if len(fields) >= 3 else ""
    found = len(problems)
    name = _check_name(name, line, file, problems, notes)
    _check_password(name, password, line, file, problems)
    admin = _parse_admin(admin_text, line, notes)
    if len(problems) > found:
        return None  # only rows that are used are warned about
    lenient.merge(notes)
    if password == GENERATED:
        return User(name=name, password="", admin=admin, line=line, generated=True)
    if password in PUBLIC_EXAMPLES:
        problems.append(warning(file, line, f"the password of '{name}' is an example printed in a public repository: "
                                f"anyone can log in with it; choose another, or write {GENERATED} to have the box make one"))
    return User(name=name, password=password, admin=admin, line=line)


def _check_name(name: str, line: int, file: str, problems: list[Problem], lenient: _Lenient) -> str:
    """The account name for `name` (folded to lower case), after reporting what cannot work."""
    folded = name.lower()
    if not name:
        problems.append(error(file, line, "empty user name"))
    elif not NAME_RE.fullmatch(folded) or folded.isdigit() or folded.endswith("."):
        problems.append(error(file, line, f"invalid user name '{_show(name)}': {_name_hint(folded)}"))
    elif folded in RESERVED:
        problems.append(error(file, line, f"user name '{folded}' is reserved (a system account or group of the hub)"))
    elif folded != name:
        lenient.note("case", line, f"'{_show(name)}' -> '{folded}'")
    return folded


def _name_hint(name: str) -> str:
    if len(name) > 32:
        return "at most 32 characters"
    if name.isdigit():
        return "a name of digits only would be read as a number (a UID); add a letter"
    if name[:1] in ".-":
        return f"cannot start with '{name[0]}'"
    if name.endswith("."):
        return "cannot end with '.' (Windows and FAT sticks drop it from backup folder names)"
    if any(c.isspace() for c in name):
        return "no spaces (useradd refuses them): write 'jane.doe' or 'jane_doe'"
    if not name.isascii():
        return "use ASCII letters (a-z) only: no accents, spaces or symbols"
    return "use letters, digits, '_', '.' and '-', starting with a letter, digit or '_'"


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


def _parse_admin(text: str, line: int, lenient: _Lenient) -> bool:
    """As the original Conjuring: admin for 1/y/yes/t/true in any case; anything else is not admin."""
    value = text.lower()
    if value in TRUE:
        return True
    if value not in FALSE:
        lenient.note("admin", line, f"'{_show(text)}'")
    return False


def _show(text: str) -> str:
    """A field for a message: control characters escaped, long text cut."""
    shown = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return shown if len(shown) <= 40 else shown[:37] + "..."
