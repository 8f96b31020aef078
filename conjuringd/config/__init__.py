"""The custom/ configuration: model, validator and loader.

`load_custom(folder, machine_toml)` reads a whole folder and returns
`(CustomConfig | None, problems)`; see `conjuringd.config.load`.
"""

from conjuringd.config.load import load_custom
from conjuringd.config.model import CustomConfig, FileTree, Kernel, Settings, User
from conjuringd.config.problems import ConfigError, Problem, Severity

__all__ = ["ConfigError", "CustomConfig", "FileTree", "Kernel", "Problem", "Settings", "Severity", "User", "load_custom"]
