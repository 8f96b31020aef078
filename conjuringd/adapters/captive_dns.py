"""The dnsmasq drop-in of the captive portal, in NetworkManager's dnsmasq-shared.d folder.

Written by the daemon, not shipped in the .deb: its address is the hotspot's own (ipv4.addresses
of the serve connection, or NetworkManager's 10.42.0.1), it must exist only while the captive
portal is on and the serve connection is in shared mode, and a packaged conffile would be
answered for by dpkg, not by the daemon. The file carries a marker line; a file of that name
without it is the administrator's and is never touched (the portal's DNS part is then off, said
once in the log). Writes are atomic and idempotent: the same content is not written again.

The folder is read by every dnsmasq NetworkManager starts for a *shared* connection, and only by
those: client connections (the build/uplink network, method auto or manual) never start one.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from conjuringd import atomic, captive

log = structlog.get_logger(__name__)


class DropIn:
    def __init__(self, folder: Path | str = captive.DROPIN_DIR, name: str = captive.DROPIN_NAME):
        self.path = Path(folder) / name
        self._warned_foreign = False
        self._failed: tuple[str | None] | None = None  # the content a write/remove last failed to make

    def current(self) -> str | None:
        """The file's text, or None when it is absent or unreadable as text."""
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            log.warning("captive_dropin_unreadable", path=str(self.path), error=str(err))
            return None

    def foreign(self) -> bool:
        """A file of our name that conjuringd did not write (or a symlink, a folder...)."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            return True
        text = self.current()
        return text is not None and not captive.is_ours(text)

    def wanted_differs(self, address: str | None) -> bool:
        """Whether write(address) / remove() (address None) would change the file. False when it
        cannot: a foreign file, no folder, or the same change failed before (no restart loops)."""
        wanted = captive.dropin_text(address) if address else None
        if self.foreign() or not self.path.parent.is_dir() or self._failed == (wanted,):
            return False
        return self.current() != wanted

    def write(self, address: str) -> bool:
        """Make the drop-in answer every name with `address`; True when the file changed."""
        if self._refuse():
            return False
        text = captive.dropin_text(address)
        if self.current() == text:
            return False
        if not self.path.parent.is_dir():
            log.warning("captive_dropin_folder_missing", folder=str(self.path.parent),
                        hint="is NetworkManager installed? the portal's DNS part is off")
            return False
        try:
            atomic.write_bytes(self.path, text.encode("utf-8"), 0o644)
        except OSError as err:
            return self._failure(text, "captive_dropin_not_written", err)
        self._failed = None
        log.info("captive_dropin_written", path=str(self.path), address=address)
        return True

    def remove(self) -> bool:
        """Remove our drop-in (never someone else's file); True when a file went."""
        if self._refuse() or self.current() is None:
            return False
        try:
            self.path.unlink(missing_ok=True)
        except OSError as err:
            return self._failure(None, "captive_dropin_not_removed", err)
        self._failed = None
        log.info("captive_dropin_removed", path=str(self.path))
        return True

    def _failure(self, wanted: str | None, event: str, err: OSError) -> bool:
        if self._failed != (wanted,):
            log.error(event, path=str(self.path), error=str(err))
        self._failed = (wanted,)
        return False

    def _refuse(self) -> bool:
        if not self.foreign():
            self._warned_foreign = False
            return False
        if not self._warned_foreign:
            log.error("captive_dropin_not_ours", path=str(self.path),
                      hint="this file was not written by conjuringd and is left alone; "
                           "rename it to let conjuringd manage the captive portal's DNS")
            self._warned_foreign = True
        return True
