"""The `conjuringd` console command: the daemon, or one line saying which of its libraries are missing.

A teacher's laptop has conjuringd from a plain `pip install` (for `conjuringctl validate`), without the
`[daemon]` extra; starting the daemon there must not end in an ImportError traceback.
"""

from __future__ import annotations

import importlib.util
import sys

# import name -> distribution name, as listed in pyproject.toml's [daemon] extra
DAEMON_LIBRARIES = {"pyudev": "pyudev", "dbus_next": "dbus-next", "docker": "docker", "watchdog": "watchdog",
                    "sdnotify": "sdnotify", "segno": "segno"}


def missing_libraries() -> list[str]:
    """The daemon-only distributions that cannot be imported here, in pyproject's order."""
    return [dist for module, dist in DAEMON_LIBRARIES.items() if importlib.util.find_spec(module) is None]


def missing_message(missing: list[str]) -> str:
    return (f"conjuringd: the daemon needs its own libraries, missing here: {', '.join(missing)}; "
            "install them with: pip install 'conjuringd[daemon]' (conjuringctl validate works without them)")


def main(argv: list[str] | None = None) -> None:
    missing = missing_libraries()
    if missing:
        print(missing_message(missing), file=sys.stderr)
        raise SystemExit(1)
    from conjuringd import daemon

    daemon.main(argv)
