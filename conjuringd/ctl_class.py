"""conjuringctl's classroom parts: `conjuringctl sheet` (CLASS.html on the box) and the lines of
`conjuringctl status` that say where students go and how many are working.

`sheet` reads the active configuration's snapshot and the passwords the box made (both root-only)
and the daemon's status.json (the address, the Wi-Fi it serves), and writes the same CLASS.html an
enrolled stick receives, readable by its owner only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from conjuringd import urls
from conjuringd.config.load import load_custom
from conjuringd.config.machine import load_machine
from conjuringd.config.problems import ConfigError
from conjuringd.passwords import GeneratedPasswords
from conjuringd.paths import Paths
from conjuringd.reconcile.model import NetworkObserved
from conjuringd.sheet import FILE_NAME, ClassSheet, Login, class_sheet, render_class_sheet
from conjuringd.state import StateFile

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
NOT_MADE = "(not made yet: the hub has not started)"


class SheetError(Exception):
    """The sheet cannot be made; the message says why."""


def address_of(status: dict) -> str:
    """What students type, from status.json (the published name when the daemon has one)."""
    return urls.student_address(status.get("mdns_name"), int(status.get("hub_port") or 8989),
                                status.get("hub_urls") or [])


def _read_status(paths: Paths) -> dict:
    try:
        return json.loads(paths.status_file.read_text())
    except (OSError, ValueError):
        return {}  # the daemon is not running: the sheet still has the accounts, without an address


def _observed_network(status: dict) -> NetworkObserved | None:
    network = status.get("network")
    if not isinstance(network, dict):
        return None
    return NetworkObserved(str(network.get("serve") or ""), str(network.get("state") or ""),
                           tuple(network.get("addresses") or ()), str(network.get("ssid") or ""))


def box_sheet(paths: Paths) -> ClassSheet:
    """The class sheet of the active configuration, as the daemon would write it onto an enrolled stick."""
    active = StateFile(paths.state_file).read().active
    if not active:
        raise SheetError("no configuration is active yet")
    machine = load_machine(paths.machine_toml, paths.machine_good, save=False)
    try:
        config, _ = load_custom(paths.configs / active, machine)
    except (ConfigError, PermissionError) as exc:
        raise SheetError(f"cannot read the active configuration {active[:12]}: {exc}") from exc
    if config is None:
        raise SheetError(f"the active configuration {active[:12]} does not load")
    config = GeneratedPasswords(paths.secrets).resolve(config, make=False)
    status = _read_status(paths)
    sheet = class_sheet(config, _observed_network(status), address_of(status), socket.gethostname(),
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    logins = tuple(Login(x.name, x.password or NOT_MADE, x.admin) for x in sheet.logins)
    return ClassSheet(sheet.address, sheet.wifi, logins, sheet.box, sheet.made)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with a file only its owner can read (it holds passwords): temp file, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp creates it 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_sheet(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("conjuringctl sheet: the sheet holds every password: run as root", file=sys.stderr)
        return EXIT_UNREACHABLE
    paths = Paths(state_dir=args.state_dir, config_dir=args.config_dir, runtime_dir=args.runtime_dir)
    try:
        sheet = box_sheet(paths)
    except SheetError as exc:
        print(f"conjuringctl sheet: {exc}", file=sys.stderr)
        return EXIT_INVALID
    target = Path(args.output)
    try:
        write_private(target, render_class_sheet(sheet).encode())
    except OSError as exc:
        print(f"{target}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    where = sheet.address or "no address yet (is conjuringd running?)"
    print(f"wrote {target}: {len(sheet.logins)} slips, address {where}; it holds passwords (mode 0600)", file=sys.stderr)
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser("sheet", help="write the printable class sheet (CLASS.html, with every password) (root)")
    p.add_argument("-o", "--output", default=FILE_NAME, metavar="FILE",
                   help=f"where to write it (default: {FILE_NAME} in the current folder)")
    p.set_defaults(func=cmd_sheet)


def classroom_lines(status: dict) -> list[str]:
    """`conjuringctl status`: the published name, the address students type, the Wi-Fi they join."""
    wifi = status.get("wifi") if isinstance(status.get("wifi"), dict) else {}
    ssid = wifi.get("ssid") or ""
    kind = "the box's own hotspot" if wifi.get("own_hotspot") else "the network the box serves on"
    return [
        f"name:     {status.get('mdns_name') or '- (not published)'}",
        f"address:  {address_of(status) or '-'}",
        f"wi-fi:    {f'{ssid} ({kind})' if ssid else '-'}",
    ]


def students_line(students: dict) -> str:
    recent = students.get("students_recent")
    return (f"students: {students.get('students_active')} connected (server running), "
            + (f"{recent} active in the last 10 minutes, " if recent is not None else "")
            + f"{students.get('students_starting')} starting; {students.get('students')} known to the hub")


__all__ = ["address_of", "box_sheet", "classroom_lines", "cmd_sheet", "register", "students_line", "write_private"]
