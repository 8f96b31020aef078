"""Stick enrolment: which sticks may change this box, and which receive anything from it.

The box keeps one secret (`secrets/stick-secret`, 32 random bytes, root-only).
Enrolling a stick gives it a fresh random credential id and writes
`conjuring/stick.key` onto it, holding the id and a token: HMAC-SHA256 of the
box secret over the id and the stick's filesystem UUID. The box keeps, per
stick, only the id, the UUID it was bound to and metadata (label, when it was
enrolled and last used, when it was revoked) in `secrets/sticks.json`: nothing
there is secret, and the token is recomputed to check a stick. Revoking marks
one id revoked; the others keep working. Entries are never deleted, so "no
stick was ever enrolled" (trust on first use) is true only on a new box.

What it proves: the stick carries a key this box made for a filesystem with
this UUID. What it does not: that the configuration on it is the teacher's
(anyone holding the stick can change its files), or that it is the original
stick (a byte copy of the whole stick, or a filesystem made with the same UUID
and a copied stick.key, passes).

The pure part (`parse_key`, `render_key`, `token_for`, `judge`) is unit
tested; `read_credential` / `write_credential` touch the mounted stick and
`Enrolment` the box's files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import structlog

from conjuringd.paths import Paths
from conjuringd.sticks.layout import find_entry
from conjuringd.sticks.report import write_atomic

log = structlog.get_logger(__name__)

KEY_NAME = "stick.key"
KEY_FORMAT = "conjuring-stick-key 1"
MAX_KEY_BYTES = 1024
SECRET_FILE = "stick-secret"
REGISTRY_FILE = "sticks.json"
TRUST = ("enrolled", "any")


# --- the credential (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    id: str  # 16 lower-case hex digits, random per enrolment
    token: str  # 64 hex digits: HMAC-SHA256(box secret, id and filesystem UUID)


def normal_uuid(fs_uuid: str) -> str:
    return fs_uuid.strip().lower()


def token_for(secret: bytes, cred_id: str, fs_uuid: str) -> str:
    message = b"conjuring stick v1\0" + cred_id.encode("ascii") + b"\0" + normal_uuid(fs_uuid).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def new_credential(secret: bytes, fs_uuid: str) -> Credential:
    cred_id = secrets.token_hex(8)
    return Credential(cred_id, token_for(secret, cred_id, fs_uuid))


def render_key(cred: Credential) -> bytes:
    return (
        f"{KEY_FORMAT}\r\n"
        "# This stick is enrolled on a Conjuring box: with it, the stick may change the box.\r\n"
        "# Keep the stick safe; do not copy this file. Revoke: conjuringctl revoke ID (as root on the box).\r\n"
        f"id={cred.id}\r\n"
        f"token={cred.token}\r\n"
    ).encode("ascii")


def _is_hex(text: str, size: int) -> bool:
    return len(text) == size and all(c in "0123456789abcdef" for c in text)


def parse_key(data: bytes) -> Credential | None:
    """The credential in a stick.key, or None if the file is not one (any doubt: None)."""
    if len(data) > MAX_KEY_BYTES:
        return None
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    if not lines or lines[0].strip() != KEY_FORMAT:
        return None
    fields: dict[str, str] = {}
    for line in lines[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or name in fields:
            return None
        fields[name] = value
    cred_id, token = fields.get("id", ""), fields.get("token", "")
    if not (_is_hex(cred_id, 16) and _is_hex(token, 64)):
        return None
    return Credential(cred_id, token)


# --- the box's record of enrolled sticks (pure) ----------------------------------------------


@dataclass(frozen=True)
class EnrolledStick:
    id: str
    fs_uuid: str
    label: str = ""
    fstype: str = ""
    enrolled_at: str = ""  # ISO 8601 UTC
    how: str = ""  # "first stick" | "conjuringctl enroll"
    last_used: str = ""
    revoked_at: str = ""
    revoked_why: str = ""

    @property
    def active(self) -> bool:
        return not self.revoked_at


@dataclass(frozen=True)
class Verdict:
    kind: str  # "enrolled" | "first" | "any" | "refused"
    reason: str = ""  # why refused (journal only)
    stick: EnrolledStick | None = None

    @property
    def admitted(self) -> bool:
        return self.kind != "refused"


def judge(sticks: tuple[EnrolledStick, ...], secret: bytes | None, cred: Credential | None, fs_uuid: str,
          trust: str) -> Verdict:
    """May this stick change the box? Pure: the box's records, its secret, what the stick carries."""
    if trust == "any":  # any stick may change the box; only an enrolled one is named (and gets passwords)
        checked = judge(sticks, secret, cred, fs_uuid, "enrolled") if sticks and cred is not None else None
        return Verdict("any", stick=checked.stick if checked is not None and checked.kind == "enrolled" else None)
    if not sticks:
        return Verdict("first")
    if cred is None:
        return Verdict("refused", f"no valid conjuring/{KEY_NAME} on the stick")
    entry = next((s for s in sticks if s.id == cred.id), None)
    if entry is None:
        return Verdict("refused", f"credential {cred.id} is not enrolled on this box")
    if not entry.active:
        return Verdict("refused", f"credential {cred.id} was revoked at {entry.revoked_at}", entry)
    if normal_uuid(entry.fs_uuid) != normal_uuid(fs_uuid):
        return Verdict("refused", f"credential {cred.id} belongs to filesystem {entry.fs_uuid}, not {fs_uuid}", entry)
    if secret is None or not hmac.compare_digest(cred.token, token_for(secret, cred.id, fs_uuid)):
        return Verdict("refused", f"credential {cred.id} has a wrong token", entry)
    return Verdict("enrolled", stick=entry)


def now_iso(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when))


# --- the stick's side (blocking) ----------------------------------------------------------------


def read_credential(conjuring: Path) -> Credential | None:
    """conjuring/stick.key from a mounted stick: never through a link, never blocking on a FIFO,
    a regular file of at most MAX_KEY_BYTES. Anything else is "no credential"."""
    path = find_entry(conjuring, KEY_NAME, want_dir=False)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        log.info("stick_key_unreadable", path=str(path), error=exc.strerror or str(exc))
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_KEY_BYTES:
            return None
        data = os.read(fd, MAX_KEY_BYTES + 1)
    finally:
        os.close(fd)
    return parse_key(data)


def write_credential(conjuring: Path, cred: Credential) -> Path:
    """Write (or replace) conjuring/stick.key on a writable mount."""
    path = find_entry(conjuring, KEY_NAME, want_dir=False) or conjuring / KEY_NAME
    write_atomic(path, render_key(cred))
    return path


# --- the box's side (blocking, thread-safe) ------------------------------------------------------


class EnrolError(Exception):
    """Enrolment or revocation cannot be done; the message is for the administrator."""


class Enrolment:
    """The box secret and the record of enrolled sticks under the state folder's secrets/."""

    def __init__(self, paths: Paths):
        self.folder = paths.secrets
        self._lock = threading.Lock()

    @property
    def registry_path(self) -> Path:
        return self.folder / REGISTRY_FILE

    def sticks(self) -> tuple[EnrolledStick, ...]:
        with self._lock:
            return self._load()

    def _load(self) -> tuple[EnrolledStick, ...]:
        try:
            data = json.loads(self.registry_path.read_bytes())
        except FileNotFoundError:
            return ()
        except (OSError, ValueError) as exc:
            # unreadable records must not reopen trust on first use: treat as "sticks exist, none valid"
            log.error("stick_registry_unreadable", path=str(self.registry_path), error=str(exc))
            return (EnrolledStick(id="-", fs_uuid="-", revoked_at="unreadable record"),)
        fields = set(EnrolledStick.__dataclass_fields__)
        return tuple(EnrolledStick(**{k: str(v) for k, v in item.items() if k in fields})
                     for item in data.get("sticks", []) if isinstance(item, dict) and item.get("id"))

    def _save(self, sticks: tuple[EnrolledStick, ...]) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        kept = [asdict(s) for s in sticks if s.id != "-"]  # not the stand-in for an unreadable record
        data = json.dumps({"version": 1, "sticks": kept}, indent=1).encode()
        write_atomic(self.registry_path, data)
        os.chmod(self.registry_path, 0o600)

    def secret(self, create: bool = False) -> bytes | None:
        path = self.folder / SECRET_FILE
        try:
            data = path.read_bytes()
            if len(data) >= 32:
                return data
            log.error("stick_secret_too_short", path=str(path))
            return None
        except FileNotFoundError:
            if not create:
                return None
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            data = secrets.token_bytes(32)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("stick_secret_created", path=str(path))
        return data

    def check(self, cred: Credential | None, fs_uuid: str, trust: str) -> Verdict:
        """The verdict for a stick; an enrolled one's last use is recorded."""
        with self._lock:
            sticks = self._load()
            verdict = judge(sticks, self.secret(), cred, fs_uuid, trust)
            if verdict.kind == "enrolled" and verdict.stick is not None:
                used = replace(verdict.stick, last_used=now_iso())
                self._save(tuple(used if s.id == used.id else s for s in sticks))
                verdict = replace(verdict, stick=used)
            return verdict

    def enrol(self, conjuring: Path, fs_uuid: str, label: str, fstype: str, how: str,
              only_if_first: bool = False) -> EnrolledStick | None:
        """Write a new credential onto the stick, then record it; earlier credentials of the same
        filesystem are revoked. `only_if_first`: do it only while no stick was ever enrolled."""
        if not normal_uuid(fs_uuid):
            raise EnrolError("this stick's filesystem has no UUID: format it (FAT32, exFAT or ext4) and try again")
        with self._lock:
            sticks = self._load()
            if only_if_first and sticks:
                return None
            cred = new_credential(self.secret(create=True) or b"", fs_uuid)
            write_credential(conjuring, cred)
            when = now_iso()
            entry = EnrolledStick(cred.id, fs_uuid, label, fstype, when, how, last_used=when)
            older = tuple(replace(s, revoked_at=when, revoked_why=f"re-enrolled as {cred.id}")
                          if s.active and normal_uuid(s.fs_uuid) == normal_uuid(fs_uuid) else s for s in sticks)
            self._save(older + (entry,))
        log.info("stick_enrolled", id=cred.id, uuid=fs_uuid, label=label, how=how)
        return entry

    def revoke(self, cred_id: str) -> EnrolledStick:
        with self._lock:
            sticks = self._load()
            entry = next((s for s in sticks if s.id == cred_id.strip().lower()), None)
            if entry is None:
                raise EnrolError(f"no stick with id {cred_id!r} is enrolled (see conjuringctl sticks)")
            if not entry.active:
                raise EnrolError(f"stick {entry.id} was already revoked at {entry.revoked_at}")
            revoked = replace(entry, revoked_at=now_iso(), revoked_why="conjuringctl revoke")
            self._save(tuple(revoked if s.id == entry.id else s for s in sticks))
        log.warning("stick_revoked", id=revoked.id, label=revoked.label, uuid=revoked.fs_uuid)
        return revoked
