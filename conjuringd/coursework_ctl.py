"""`conjuringctl collect FOLDER DEST` and `conjuringctl distribute SRC` (root, on the box)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conjuringd.config.model import UsbSettings
from conjuringd.paths import Paths

EXIT_OK, EXIT_INVALID = 0, 1


def _paths(args: argparse.Namespace) -> Paths:
    return Paths(state_dir=args.state_dir, config_dir=args.config_dir, runtime_dir=args.runtime_dir)


def _home_dir(args: argparse.Namespace, paths: Paths) -> Path:
    from conjuringd.migrate import box_home_dir

    return Path(args.home_dir) if args.home_dir else box_home_dir(paths)


def cmd_collect(args: argparse.Namespace) -> int:
    from conjuringd.collect import CoursefolderError, collect_homes  # POSIX-only open flags: not for `validate`
    from conjuringd.sticks.coursework import limits

    paths = _paths(args)
    try:
        result = collect_homes(_home_dir(args, paths), args.folder, Path(args.dest), limits(UsbSettings()))
    except CoursefolderError as exc:
        print(f"not collected: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print("\n".join(result.lines()))
    return EXIT_INVALID if any(s.state in ("over-limit", "refused", "not-written") for s in result.students) else EXIT_OK


def cmd_distribute(args: argparse.Namespace) -> int:
    from conjuringd.collect import CoursefolderError
    from conjuringd.distribute import distribute_folder, store_distribution
    from conjuringd.sticks.copy import TreeTooLarge
    from conjuringd.sticks.coursework import limits
    from conjuringd.uids import UidMap

    paths = _paths(args)
    src = Path(args.src).resolve()
    name = args.name or src.name
    if not src.is_dir():
        print(f"not distributed: {src} is not a folder", file=sys.stderr)
        return EXIT_INVALID
    try:
        refused = store_distribution(src, name, paths.state_dir, limits(UsbSettings()))
    except (CoursefolderError, TreeTooLarge) as exc:
        print(f"not distributed: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for refusal in refused:
        print(f"not distributed: {refusal}", file=sys.stderr)
    owners = UidMap(paths.state_dir / "uids.json").known()
    result = distribute_folder(paths.state_dir, name, _home_dir(args, paths), owners)
    print("\n".join(result.lines()))
    return EXIT_INVALID if refused or any(s.refused for s in result.students) else EXIT_OK


def register(sub) -> None:
    """Add `collect` and `distribute` to conjuringctl's subcommands."""
    p = sub.add_parser("collect", help="copy ~/FOLDER/ of every student into DEST/<student>/ with a MANIFEST.csv (root)")
    p.add_argument("folder", help="the folder's name in the homes, e.g. homework")
    p.add_argument("dest", help="where to put the copies (created if need be; a second run writes only what changed)")
    p.add_argument("--home-dir", default=None)
    p.set_defaults(func=cmd_collect)
    p = sub.add_parser("distribute", help="copy the folder SRC into every student's home as ~/<name of SRC>/ (root)")
    p.add_argument("src", help="the teacher's folder")
    p.add_argument("--name", default=None, help="the folder's name in the homes (default: SRC's own name)")
    p.add_argument("--home-dir", default=None)
    p.set_defaults(func=cmd_distribute)
