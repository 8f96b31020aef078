"""Run the real conjuringd process against temporary folders, with a real notify socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, folder: Path):
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[tuple[float, str]] = []

    def collect(self, timeout: float) -> list[tuple[float, str]]:
        """Read whatever arrives within `timeout` seconds; returns the new messages."""
        deadline = time.monotonic() + timeout
        new = []
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            for line in data.decode().splitlines():
                new.append((time.monotonic(), line))
        self.messages += new
        return new

    def wait_for(self, predicate, timeout: float) -> tuple[float, str] | None:
        deadline = time.monotonic() + timeout
        for message in self.messages:
            if predicate(message[1]):
                return message
        while time.monotonic() < deadline:
            for message in self.collect(min(0.2, deadline - time.monotonic())):
                if predicate(message[1]):
                    return message
        return None

    def close(self) -> None:
        self.sock.close()


@dataclass
class Daemon:
    """A conjuringd process with its own state, config and runtime folders."""

    root: Path
    args: list[str] = field(default_factory=lambda: ["--hub", "none", "--network", "none", "--usb", "none"])
    env: dict[str, str] = field(default_factory=dict)
    default_custom: Path = REPO / "custom"
    module: str = "conjuringd.daemon"  # or tests.support.standin_daemon (the micromamba stand-in, a named container)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.state_dir = self.root / "state"
        self.config_dir = self.root / "etc"
        self.runtime_dir = self.root / "run"
        self.log_path = self.root / "daemon.log"
        self.notify = NotifySocket(self.root)

    @property
    def custom(self) -> Path:
        return self.config_dir / "custom"

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--state-dir", str(self.state_dir),
                "--config-dir", str(self.config_dir), "--runtime-dir", str(self.runtime_dir),
                "--default-custom", str(self.default_custom), "--log-format", "json", *self.args,
                *(() if "--mdns" in self.args else ("--mdns", "none"))]  # only a test that asks publishes a name

    def start(self) -> float:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **self.env}
        env["PYTHONPATH"] = str(REPO)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     env=env, cwd=REPO)
        return self.started

    def events(self, name: str | None = None) -> list[dict]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                found.append(event)
        return found

    def wait_event(self, name: str, count: int = 1, timeout: float = 30, **match) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = [e for e in self.events(name) if all(e.get(k) == v for k, v in match.items())]
            if len(events) >= count:
                return events
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {count}x {name} {match} within {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def status(self) -> dict:
        return json.loads((self.runtime_dir / "status.json").read_text())

    def wait_status(self, predicate, timeout: float = 10) -> dict:
        """Poll status.json until `predicate(status)` holds (the log line may come first)."""
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            try:
                status = self.status()
            except (OSError, ValueError):
                status = {}
            if status and predicate(status):
                return status
            time.sleep(0.05)
        raise AssertionError(f"status never matched within {timeout}s: {status}")

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "conjuringd.ctl", "--state-dir", str(self.state_dir),
                   "--config-dir", str(self.config_dir), "--runtime-dir", str(self.runtime_dir), *args]
        return subprocess.run(command, capture_output=True, text=True, check=check, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=900)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("daemon did not stop within the timeout after SIGTERM")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.notify.close()


def copy_custom(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
