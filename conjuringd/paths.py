"""Where the daemon keeps things (DESIGN.md section 6). Every path is settable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    state_dir: Path = Path("/var/lib/conjuring")
    config_dir: Path = Path("/etc/conjuring")
    runtime_dir: Path = Path("/run/conjuring")
    default_custom: Path = Path("/usr/share/conjuring/custom")

    @property
    def machine_toml(self) -> Path:
        return self.config_dir / "conjuring.toml"

    @property
    def machine_good(self) -> Path:
        """Copy of the last machine conjuring.toml without errors (used while the file is broken)."""
        return self.state_dir / "machine-good.toml"

    @property
    def local_custom(self) -> Path:
        return self.config_dir / "custom"

    @property
    def configs(self) -> Path:
        return self.state_dir / "configs"

    @property
    def home(self) -> Path:
        return self.state_dir / "home"

    @property
    def secrets(self) -> Path:
        """Root-only folder for run-time secrets handed to the hub (users, tokens)."""
        return self.state_dir / "secrets"

    @property
    def staging(self) -> Path:
        """Scratch space for imports in progress (same filesystem as configs/)."""
        return self.state_dir / "staging"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def status_file(self) -> Path:
        return self.runtime_dir / "status.json"

    @property
    def media(self) -> Path:
        return self.runtime_dir / "media"

    @property
    def wake_socket(self) -> Path:
        """conjuringctl pokes the daemon here (apply, rebuild)."""
        return self.runtime_dir / "ctl.sock"
