"""Problems found in a configuration, reported compiler-style."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Problem:
    """One finding: `file:line: severity: message` (line 0 = whole file)."""

    file: str
    line: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity.value}: {self.message}"


def error(file: str, line: int, message: str) -> Problem:
    return Problem(file, line, Severity.ERROR, message)


def warning(file: str, line: int, message: str) -> Problem:
    return Problem(file, line, Severity.WARNING, message)


def has_errors(problems: "list[Problem] | tuple[Problem, ...]") -> bool:
    return any(p.severity is Severity.ERROR for p in problems)


class ConjuringError(Exception):
    """Base of the daemon's own, expected errors."""


class ConfigError(ConjuringError):
    """The configuration is invalid; wait for new input before trying again."""

    def __init__(self, problems: "list[Problem] | tuple[Problem, ...]", message: str = ""):
        self.problems = tuple(problems)
        super().__init__(message or "; ".join(str(p) for p in self.problems if p.severity is Severity.ERROR))


class TransientError(ConjuringError):
    """Something outside is unavailable right now (Docker, NetworkManager); back off and retry."""


class BuildFailed(ConjuringError):
    """An image build failed for these inputs; not retried until they change."""

    def __init__(self, image_hash: str, step: str, log_tail: "tuple[str, ...]" = ()):
        self.image_hash = image_hash
        self.step = step
        self.log_tail = tuple(log_tail)
        super().__init__(f"image build failed at {step}")


class HubUnhealthy(ConjuringError):
    """A new hub container did not become healthy; the previous one was restored."""

    def __init__(self, key: str, message: str, log_tail: "tuple[str, ...]" = ()):
        self.key = key  # "<image hash>:<restart hash>"
        self.log_tail = tuple(log_tail)
        super().__init__(message)
