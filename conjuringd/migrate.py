"""`conjuringctl migrate PATH`: take over an installation of the original Conjuring.

The original ran from a checkout holding `custom/` (the configuration) and, per its
docker-compose.yml, `custom/home/` mounted as the container's /home: one folder per
student, owned by the UID `useradd -K UID_MIN=2000` gave them in users.csv order. This
imports `custom/` (without `home/` and `home_backup/`) as the box's local configuration,
once it validates, keeping the previous one beside it; then copies each home in with its
files, owned by this box's stable UID for that student (uids.json), under the same rules
as a restore (backup_legacy.py). The source is only ever read.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from conjuringd.backup import RestoreResult
from conjuringd.backup_legacy import restore_tree
from conjuringd.config.load import load_custom
from conjuringd.config.machine import load_machine
from conjuringd.config.problems import ConjuringError, Severity
from conjuringd.paths import Paths
from conjuringd.sticks.copy import CopyLimits, TreeTooLarge, safe_copy
from conjuringd.store import config_digest
from conjuringd.uids import UidMap

HOME_NAME_RE = re.compile(r"[a-z_][a-z0-9._-]{0,31}")
NOT_CONFIG = frozenset({"home", "home_backup"})
COMPOSE_OVERRIDE = "docker-compose.override.yml"


class MigrateError(ConjuringError):
    """The installation cannot be migrated; nothing was changed."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.problems = problems


@dataclass
class MigrateReport:
    source: Path
    config_into: Path | None = None
    config_kept_aside: Path | None = None
    config_problems: list[str] = field(default_factory=list)  # warnings, and what the copy refused
    uid_map: dict[str, tuple[int, int]] = field(default_factory=dict)  # home -> (original UID, this box's UID)
    not_listed: list[str] = field(default_factory=list)  # homes of names not in users.csv (imported)
    skipped_homes: list[str] = field(default_factory=list)
    restore: RestoreResult | None = None
    notes: list[str] = field(default_factory=list)


def box_home_dir(paths: Paths) -> Path:
    """Where this box keeps homes: the machine's [hub] home_dir, else the state folder's home/."""
    configured = load_machine(paths.machine_toml, paths.machine_good, save=False).settings.hub.home_dir
    return Path(configured) if configured else paths.home


def find_installation(path: Path) -> Path:
    """The folder holding the original's custom/ (PATH itself, or PATH's parent if PATH is custom/)."""
    for root in (path, path.parent):
        if (root / "custom" / "users.csv").is_file() and not (root / "custom").is_symlink():
            return root
    raise MigrateError(f"{path}: not an installation of Conjuring (no custom/users.csv in it)")


def _stage_config(custom: Path, paths: Paths):
    """Copy custom/ (minus the homes) next to the local configuration and validate the copy:
    (the copy, its problems as lines, the names in its users.csv in order)."""
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    staging = paths.config_dir / ".custom.migrating"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        refusals = safe_copy(custom, staging, CopyLimits(exclude=NOT_CONFIG))
    except TreeTooLarge as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise MigrateError(f"{custom}: {exc}", tuple(str(r) for r in exc.refusals)) from exc
    users = staging / "users.csv"
    if users.is_file():
        users.chmod(0o600)  # the teacher's passwords: root-only, as the box keeps them
    machine = load_machine(paths.machine_toml, paths.machine_good, save=False)
    config, problems = load_custom(staging, machine)
    lines = [str(p) for p in problems]
    if config is None:
        shutil.rmtree(staging)
        errors = tuple(str(p) for p in problems if p.severity is Severity.ERROR)
        raise MigrateError(f"{custom} does not validate: {len(errors)} error(s); nothing was changed", tuple(lines))
    return staging, [f"copy: {r}" for r in refusals] + lines, [u.name for u in config.users]


def _install_config(staging: Path, paths: Paths, report: MigrateReport) -> None:
    local = paths.local_custom
    if local.is_dir() and not local.is_symlink() and config_digest(local) == config_digest(staging):
        shutil.rmtree(staging)
        report.notes.append(f"{local} already holds this configuration: left as it is")
        return
    if os.path.lexists(local):
        stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
        aside = next(p for n in range(1000) if not os.path.lexists(
            p := local.with_name(f"custom.before-migrate-{stamp}" + (f".{n}" if n else ""))))
        os.rename(local, aside)
        report.config_kept_aside = aside
    os.rename(staging, local)
    report.config_into = local


def _plan_homes(home_src: Path, users: list[str], uids: UidMap, report: MigrateReport) -> dict[str, int]:
    """This box's UID for every home to import; the original's UID of each goes into the report."""
    found = {}
    for item in sorted(os.scandir(home_src), key=lambda e: e.name):
        if not item.is_dir(follow_symlinks=False):
            report.skipped_homes.append(f"{item.name}: not a folder")
        elif not HOME_NAME_RE.fullmatch(item.name):
            report.skipped_homes.append(f"{item.name}: not a user name")
        else:
            found[item.name] = item.stat(follow_symlinks=False).st_uid
    extra = [name for name in found if name not in users]
    assigned = uids.assign([*users, *extra])
    report.not_listed = extra
    report.uid_map = {name: (uid, assigned[name]) for name, uid in found.items()}
    return {name: assigned[name] for name in found}


def migrate(path: Path, paths: Paths, home_dir: Path, *, force: bool = False) -> MigrateReport:
    """Import the installation at `path`; MigrateError (nothing changed) if its custom/ is invalid."""
    root = find_installation(path)
    report = MigrateReport(root)
    staging, report.config_problems, users = _stage_config(root / "custom", paths)
    _install_config(staging, paths, report)
    if os.path.lexists(root / COMPOSE_OVERRIDE):
        report.notes.append(f"{COMPOSE_OVERRIDE}: not imported (conjuringd runs no docker-compose); "
                            f"set its uses in {paths.machine_toml} ([hub] keys, e.g. port, home_dir)")
    home_src = root / "custom" / "home"
    if not home_src.is_dir() or home_src.is_symlink():
        report.notes.append(f"{home_src}: no homes to import")
        return report
    owners = _plan_homes(home_src, users, UidMap(paths.state_dir / "uids.json"), report)
    if owners:
        source_owners = {name: report.uid_map[name][0] for name in owners}
        report.restore = restore_tree(home_src, home_dir, force=force, owners=owners, source_owners=source_owners,
                                      only=set(owners))
    return report


def format_report(report: MigrateReport) -> str:
    lines = [f"migrated from {report.source}"]
    if report.config_into:
        lines.append(f"configuration: custom/ imported into {report.config_into}")
    if report.config_kept_aside:
        lines.append(f"  the previous local configuration is kept in {report.config_kept_aside}")
    lines += [f"  {p}" for p in report.config_problems]
    for name, (old, new) in sorted(report.uid_map.items()):
        note = " (not in users.csv: imported, cannot log in until listed)" if name in report.not_listed else ""
        lines.append(f"home {name}: UID {old} -> {new}{note}")
    lines += [f"home skipped: {s}" for s in report.skipped_homes]
    if report.restore:
        r = report.restore
        lines.append(f"files: imported {len(r.restored)}, identical {r.identical}, kept newer {len(r.kept_newer)}, "
                     f"skipped {len(r.problems)}")
        lines += [f"  skipped: {p}" for p in r.problems]
        lines += [f"  kept (newer on this box): {p}" for p in r.kept_newer]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
