"""conjuringctl: validate, plan, apply, inspect; make a users.csv (users new); export z2jh.

Exit codes:
  0  success (validate: no errors; warnings allowed)
  1  the configuration has errors, or the daemon refused/failed the request
  2  usage error, or a path that cannot be read
  3  the daemon is not reachable, or its status cannot be read (permissions)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from conjuringd.config.load import load_custom
from conjuringd.ctl_class import address_of, classroom_lines, students_line
from conjuringd.config.machine import MachineSettings, load_machine
from conjuringd.config.problems import ConfigError, Severity
from conjuringd.hashing import changed_layers, config_hashes
from conjuringd.passwords import GeneratedPasswords
from conjuringd.paths import Paths
from conjuringd.reconcile.model import ContainerState, Desired, HubObserved, Observed
from conjuringd.reconcile.plan import plan
from conjuringd.state import StateFile
from conjuringd.store import SnapshotStore, config_digest

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _load_and_report(path: Path, machine_toml: Path | MachineSettings | None):
    """Load a folder and print its problems; None if the folder cannot be read at all."""
    try:
        config, problems = load_custom(path, machine_toml)
    except ConfigError as exc:
        print(f"{path}: error: {exc}", file=sys.stderr)
        return None
    errors = sum(1 for p in problems if p.severity is Severity.ERROR)
    for problem in problems:
        print(problem)
    return config, errors, len(problems) - errors


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = _load_and_report(args.path, args.machine_toml)
    if loaded is None:
        return EXIT_USAGE
    _, errors, warnings = loaded
    print(f"{errors} error(s), {warnings} warning(s)")
    return EXIT_INVALID if errors else EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    paths = _paths(args)
    machine = load_machine(paths.machine_toml, paths.machine_good, save=False)
    if machine.broken:
        print(f"note: {machine.summary()}")
    if paths.configs.is_dir() and not os.access(paths.configs, os.R_OK | os.X_OK):
        print(f"cannot read the active configuration (run as root): planning {args.path} alone, not merged")
        return _plan(Path(args.path), paths, machine)
    # what apply would import: PATH merged onto the active configuration, as a stick is
    with SnapshotStore(paths).preview(Path(args.path), merge=not args.complete) as (folder, merged):
        if folder is None:
            print("the active configuration's snapshot is missing: only a complete folder can be applied")
            return EXIT_INVALID
        if merged:
            print(f"{'complete: replaces' if merged.complete else 'merged onto'} the active configuration: "
                  f"{len(merged.added)} new, {len(merged.replaced)} replaced, {len(merged.same)} identical "
                  f"file(s); {len(merged.kept)} kept, {len(merged.removed)} removed")
        return _plan(folder, paths, machine)


def _plan(path: Path, paths: Paths, machine: MachineSettings) -> int:
    loaded = _load_and_report(path, machine)
    if loaded is None:
        return EXIT_USAGE
    config, errors, _ = loaded
    if config is None or errors:
        print("not applicable: fix the errors above first")
        return EXIT_INVALID
    config = GeneratedPasswords(paths.secrets).resolve(config, make=False)  # hashed as the daemon hashes them
    new = config_hashes(config, config_digest(path))
    converged = StateFile(paths.state_file).read().converged
    if not converged:
        print("nothing has converged yet: everything would be built and started")
        return EXIT_OK
    for name in ("config", "image", "restart", "users", "files"):
        old = converged.get(name, "")
        mark = "unchanged" if old == new.__dict__[name] else f"{old[:12] or '-'} -> {new.__dict__[name][:12]}"
        print(f"{name:8} {mark}")
    layers = changed_layers(tuple(map(tuple, converged.get("layers", []))), new.layers)
    if layers:
        print("layers to rebuild: " + ", ".join(layers))
    container = ContainerState("current", converged.get("image", ""), converged.get("restart", ""), True,
                               converged.get("users", ""), converged.get("files", ""))
    observed = Observed(hub=HubObserved(frozenset({converged.get("image", "")}), container))
    actions = plan(Desired(new, config, str(path)), observed)
    print("actions (against the last converged state):" if actions else "no actions: already converged")
    for action in actions:
        print(f"  - {action.describe()}: {action.reason}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    path = _paths(args).status_file
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"conjuringd is not running (no {path})", file=sys.stderr)
        return EXIT_UNREACHABLE
    except PermissionError:
        print(f"cannot read {path}: run as root or as a member of the 'conjuring' group", file=sys.stderr)
        return EXIT_UNREACHABLE
    shown = None
    if args.show_passwords:
        shown = generated_passwords(_paths(args))
        if shown is None:
            return EXIT_UNREACHABLE
    if args.json:
        extra = {"address": address_of(status), **({"generated_passwords": shown} if shown is not None else {})}
        print(json.dumps({**status, **extra}, indent=2, sort_keys=True))
        return EXIT_OK
    print(format_status(status))
    if shown is not None:
        print(format_passwords(shown))
    return EXIT_OK


def generated_passwords(paths: Paths) -> dict[str, str] | None:
    """name -> password the box made, for the active configuration's "(generated)" users (root)."""
    from conjuringd.config.users import parse_users
    from conjuringd.passwords import GeneratedPasswords

    active = StateFile(paths.state_file).read().active
    users_csv = paths.configs / active / "users.csv" if active else None
    try:
        users = parse_users(users_csv.read_bytes(), "users.csv")[0] if users_csv and users_csv.is_file() else ()
        made = GeneratedPasswords(paths.secrets).read()
    except PermissionError:
        print(f"cannot read the passwords in {paths.secrets}: run as root", file=sys.stderr)
        return None
    return {u.name: made.get(u.name, "(not made yet: the hub has not started)") for u in users if u.generated}


def format_passwords(shown: dict[str, str]) -> str:
    if not shown:
        return "passwords: the active users.csv has no (generated) passwords: its own are in use"
    width = max(len(name) for name in shown)
    return "passwords made by this box (users.csv says (generated)):\n" + "\n".join(
        f"  {name:<{width}}  {password}" for name, password in shown.items())


def format_status(status: dict) -> str:
    source = status.get("active_source") or {}
    lines = [
        f"phase:    {status.get('phase')}",
        f"config:   {(status.get('active_config') or '-')[:12]} from {source.get('kind', '-')} "
        f"{source.get('label') or source.get('path') or ''}".rstrip(),
        f"hub:      {', '.join(status.get('hub_urls') or []) or '-'}",
        f"users:    {status.get('users', '-')} ({status.get('admins', '-')} admins)",
    ]
    network = status.get("network")
    if network:
        lines.append(f"network:  {network.get('serve')} {network.get('state')} {network.get('ssid') or ''} "
                     f"{' '.join(network.get('addresses') or [])}".rstrip())
    lines += classroom_lines(status)
    students = status.get("students")
    if isinstance(students, dict):
        line = students_line(students)
        if "memory_headroom_mb" in students:
            line += (f"; hub memory {students['memory_used_mb']} MiB used, {students['memory_headroom_mb']} MiB free"
                     f" (room for about {students['more_students_fit']} more active students)")
        lines.append(line)
    for key, label in (("sticks", "sticks"), ("last_report", "report"), ("prewarm", "prewarm"), ("switch_waiting", "switch")):
        value = status.get(key)
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items() if v not in (None, [], {}, ""))
        if value:
            lines.append(f"{label + ':':9} {value}")
    if status.get("machine_error"):
        lines.append(f"machine:  {status['machine_error']}")
        lines.extend(f"  {problem}" for problem in status.get("machine_problems") or [])
    if status.get("last_error"):
        lines.append(f"error:    {status['last_error']}")
    for problem in status.get("problems") or []:
        lines.append(f"  {problem}")
    age = time.time() - status.get("updated", time.time())
    lines.append(f"updated:  {age:.0f}s ago (pid {status.get('pid')})")
    return "\n".join(lines)


def _request(paths: Paths, request: dict, timeout: float = 900.0) -> dict | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(paths.wake_socket))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"conjuringd is not running (no socket at {paths.wake_socket})", file=sys.stderr)
        return None
    except PermissionError:
        print(f"permission denied on {paths.wake_socket}: run as root", file=sys.stderr)
        return None
    return json.loads(data)


def cmd_apply(args: argparse.Namespace) -> int:
    folder = Path(args.path).resolve()
    if not folder.is_dir():
        print(f"{folder}: not a folder", file=sys.stderr)
        return EXIT_USAGE
    answer = _request(_paths(args), {"command": "apply", "path": str(folder), "complete": args.complete})
    if answer is None:
        return EXIT_UNREACHABLE
    for problem in answer.get("problems", []):
        print(problem)
    merged, how = answer.get("merge"), ""
    if merged:  # said on the result's line: the first and the last line start with the result
        how = (f" ({'complete, replaced everything' if merged['complete'] else 'merged onto the active configuration'}: "
               f"{merged['added']} new, {merged['replaced']} replaced, {merged['same']} identical file(s); "
               f"{merged['kept']} kept, {merged['removed']} removed)")
    print(f"{answer.get('result', 'failed')}: {(answer.get('config') or '')[:12]} {answer.get('message') or ''}".strip() + how)
    return EXIT_OK if answer.get("ok") else EXIT_INVALID


def cmd_simple(command: str):
    def run(args: argparse.Namespace) -> int:
        answer = _request(_paths(args), {"command": command}, timeout=30)
        if answer is None:
            return EXIT_UNREACHABLE
        print("ok" if answer.get("ok") else answer.get("error", "failed"))
        return EXIT_OK if answer.get("ok") else EXIT_INVALID
    return run


def cmd_enroll(args: argparse.Namespace) -> int:
    request = {"command": "enroll", "device": args.device}
    answer = _request(_paths(args), request, timeout=120)
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(f"not enrolled: {answer.get('error', 'failed')}", file=sys.stderr)
        return EXIT_INVALID
    print(f"enrolled {answer['device']} ({answer.get('label') or 'no label'}, UUID {answer.get('uuid')}) "
          f"as {answer['id']}; the daemon imports its configuration now")
    return EXIT_OK


def format_sticks(sticks: list[dict]) -> str:
    if not sticks:
        return "no stick was ever enrolled: the first stick inserted will be"
    rows = [("ID", "LABEL", "FS UUID", "ENROLLED", "LAST USED", "STATE")]
    for s in sticks:
        state = f"revoked {s['revoked_at']}" if s.get("revoked_at") else "enrolled"
        rows.append((s["id"], s.get("label") or "-", s.get("fs_uuid") or "-", s.get("enrolled_at") or "-",
                     s.get("last_used") or "-", state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows)


def cmd_sticks(args: argparse.Namespace) -> int:
    answer = _request(_paths(args), {"command": "sticks"}, timeout=30)
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(answer.get("error", "failed"), file=sys.stderr)
        return EXIT_INVALID
    sticks = answer.get("sticks", [])
    print(json.dumps(sticks, indent=2) if args.json else format_sticks(sticks))
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    answer = _request(_paths(args), {"command": "revoke", "id": args.id}, timeout=30)
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(answer.get("error", "failed"), file=sys.stderr)
        return EXIT_INVALID
    stick = answer["stick"]
    print(f"revoked {stick['id']} ({stick.get('label') or 'no label'}, UUID {stick.get('fs_uuid')})")
    return EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    from conjuringd.backup import backup_homes

    result = backup_homes(Path(args.home_dir or _paths(args).home), Path(args.dest))
    print(result)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from conjuringd.backup_legacy import restore_any  # this box's backups, and the original Conjuring's
    from conjuringd.backup_manifest import BackupError
    from conjuringd.uids import UidMap

    paths = _paths(args)
    owners = UidMap(paths.state_dir / "uids.json").known()  # homes not on the box yet: the box's own UIDs
    try:
        result = restore_any(Path(args.src), Path(args.home_dir or paths.home), force=args.force, owners=owners)
    except BackupError as exc:
        print(f"not restored: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for problem in result.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    print(f"restored {len(result.restored)}, identical {result.identical}, kept newer {len(result.kept_newer)}, "
          f"skipped {len(result.problems)}")
    return EXIT_OK if not result.problems else EXIT_INVALID


def cmd_migrate(args: argparse.Namespace) -> int:
    from conjuringd.migrate import MigrateError, box_home_dir, format_report, migrate

    paths = _paths(args)
    try:
        report = migrate(Path(args.path), paths, Path(args.home_dir or box_home_dir(paths)), force=args.force)
    except MigrateError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"not migrated: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(format_report(report))
    return EXIT_INVALID if report.restore and report.restore.problems else EXIT_OK


def _paths(args: argparse.Namespace) -> Paths:
    return Paths(state_dir=args.state_dir, config_dir=args.config_dir, runtime_dir=args.runtime_dir)


def build_parser() -> argparse.ArgumentParser:
    defaults = Paths()
    parser = argparse.ArgumentParser(prog="conjuringctl", description="Control and inspect conjuringd.",
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=defaults.state_dir)
    parser.add_argument("--config-dir", type=Path, default=defaults.config_dir)
    parser.add_argument("--runtime-dir", type=Path, default=defaults.runtime_dir)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a custom/ folder and list every problem")
    p.add_argument("path", type=Path)
    p.add_argument("--machine-toml", type=Path, default=None, help="machine conjuring.toml to merge")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("plan", help="what applying a folder would do, and why")
    p.add_argument("path", type=Path)
    p.add_argument("--complete", action="store_true", help="plan the folder as the whole configuration (apply --complete)")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("status", help="what the daemon is doing")
    p.add_argument("--json", action="store_true")
    p.add_argument("--show-passwords", action="store_true",
                   help="also list the passwords this box made for the active users.csv's (generated) users (root)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("apply", help="merge a folder onto the active configuration (a stick's rule)")
    p.add_argument("path", type=Path)
    p.add_argument("--complete", action="store_true",
                   help="the folder is the whole configuration: replace, do not merge (as a COMPLETE marker does)")
    p.set_defaults(func=cmd_apply)
    sub.add_parser("rebuild", help="forget failed builds and try again").set_defaults(func=cmd_simple("rebuild"))
    sub.add_parser("wake", help="make the daemon re-observe now").set_defaults(func=cmd_simple("wake"))
    sub.add_parser("switch", help="a new hub waiting for the class takes over now").set_defaults(func=cmd_simple("switch"))
    p = sub.add_parser("enroll", help="enrol the inserted stick on this box (root)")
    p.add_argument("device", nargs="?", default=None, help="the stick's device node, when several are inserted")
    p.set_defaults(func=cmd_enroll)
    p = sub.add_parser("sticks", help="list the sticks enrolled on this box (root)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sticks)
    p = sub.add_parser("revoke", help="revoke one enrolled stick (root)")
    p.add_argument("id")
    p.set_defaults(func=cmd_revoke)
    p = sub.add_parser("backup", help="back up student homes to a folder")
    p.add_argument("dest")
    p.add_argument("--home-dir", default=None)
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="restore student homes from a backup folder")
    p.add_argument("src")
    p.add_argument("--home-dir", default=None)
    p.add_argument("--force", action="store_true", help="also overwrite files that are newer than the backup")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("migrate", help="take over an original Conjuring installation: its custom/ and homes (root)")
    p.add_argument("path", help="the folder holding the original's custom/ (its checkout)")
    p.add_argument("--home-dir", default=None)
    p.add_argument("--force", action="store_true", help="also overwrite files that are newer on this box")
    p.set_defaults(func=cmd_migrate)
    from conjuringd import coursework_ctl, ctl_class, newusers
    from conjuringd.export import z2jh

    newusers.register(sub)
    ctl_class.register(sub)
    coursework_ctl.register(sub)
    z2jh.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
