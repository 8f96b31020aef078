"""Passwords the box makes for users.csv rows that say `(generated)`.

Each box makes its own, once per user name, and keeps them in a root-only file in
the state folder's secrets/ (0600 in a 0700 folder). The hub receives them as it
receives every password (the run-time users file); `conjuringctl status
--show-passwords` (root) and the report on a stick show the ones the active
configuration uses. Blocking file I/O: call from the loop only for this tiny file.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

from conjuringd import atomic
from conjuringd.config.model import CustomConfig, User

FILE_NAME = "generated-passwords.json"
# easy to read aloud and to type: no 0/o, 1/l/i; 3 groups of 4 from 31 symbols, about 59 bits
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def make_password() -> str:
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(4)) for _ in range(3))


class GeneratedPasswords:
    def __init__(self, secrets_dir: Path):
        self.path = Path(secrets_dir) / FILE_NAME

    def read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, PermissionError):  # none yet, or not root (conjuringctl plan as a user)
            return {}
        except ValueError:
            return {}  # a damaged file: new passwords are made (and shown) rather than none
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and v} if isinstance(
            data, dict) else {}

    def ensure(self, names: list[str]) -> dict[str, str]:
        """The password of each name, making (and saving) the ones that do not exist yet."""
        known = self.read()
        missing = [n for n in names if n not in known]
        if missing:
            known.update({name: make_password() for name in missing})
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic.write_json(self.path, known, mode=0o600)
        return {name: known[name] for name in names}

    def resolve(self, config: CustomConfig, make: bool = True) -> CustomConfig:
        """`config` with every generated user's password filled in: made if needed, or with
        `make=False` (a read-only look, e.g. `conjuringctl plan`) only those made already."""
        wanted = [u.name for u in config.users if u.generated]
        if not wanted:
            return config
        made = self.ensure(wanted) if make else self.read()
        users = tuple(dataclasses.replace(u, password=made[u.name]) if u.generated and u.name in made else u
                      for u in config.users)
        return dataclasses.replace(config, users=users)


def generated_logins(config: CustomConfig) -> tuple[User, ...]:
    """The users of a resolved `config` whose passwords the box made."""
    return tuple(u for u in config.users if u.generated)


__all__ = ["GeneratedPasswords", "generated_logins", "make_password"]
