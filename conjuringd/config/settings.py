"""conjuring.toml: parse, check and merge the appliance settings.

The schema is the `Settings` dataclasses in `model.py`: a TOML table per
dataclass, a key per field. Unknown keys are errors with the nearest valid key
suggested. The machine file (/etc/conjuring/conjuring.toml) is read first and
the folder's own conjuring.toml overrides it key by key, but only for the keys
on the allow-list in `allow.py`: the USB policy, host paths, host devices and
host ports below 1024 are honoured only from the machine file (a folder that sets
one gets a warning naming the key, and the key is ignored).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import typing
from typing import Any

from conjuringd.config.allow import folder_limit, machine_only
from conjuringd.config.files import decode_utf8
from conjuringd.config.model import Settings
from conjuringd.config.problems import Problem, error, warning

MACHINE_FILE = "/etc/conjuring/conjuring.toml"
USB_ACCEPT = ("usb", "removable", "loop", "mmc", "any")
# Channels NetworkManager accepts per band; adapters/nm_settings.py uses this table and
# tests/integration/test_nm_real.py checks it against the real NetworkManager.
CHANNELS = {
    "bg": frozenset(range(1, 15)),
    "a": frozenset(
        [7, 8, 9, 11, 12, 16, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 56, 58, 60, 64, 100, 104, 108, 112, 116,
         120, 124, 128, 132, 136, 140, 149, 152, 153, 157, 160, 161, 165, 183, 184, 185, 187, 188, 192, 196]
    ),
}
MEM_RE = re.compile(r"[0-9]+(\.[0-9]+)?[KMGTkmgt]?")
SHM_RE = re.compile(r"[0-9]+(\.[0-9]+)?([KMGkmg][Bb]?|[Bb])?")
CLOCK_RE = re.compile(r"([01]?[0-9]|2[0-3]):[0-5][0-9]")
MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")

Path = tuple[str, ...]


@dataclasses.dataclass
class TomlFile:
    """One parsed conjuring.toml: its data, where each key is, and its problems."""

    file: str
    data: dict[str, Any]
    lines: dict[Path, int]
    problems: list[Problem]

    def line(self, path: Path) -> int:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 0


def read_toml(raw: bytes, file: str) -> TomlFile:
    """Parse TOML bytes; a syntax error becomes a problem on its line and the data is empty."""
    text, problem = decode_utf8(raw, file)
    if problem is not None:
        return TomlFile(file, {}, {}, [problem])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(match.group(1)) if match else 0
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        return TomlFile(file, {}, {}, [error(file, line, f"TOML syntax error: {message}")])
    except (RecursionError, ValueError) as exc:
        return TomlFile(file, {}, {}, [error(file, 0, f"cannot read TOML: {exc}")])
    return TomlFile(file, data, key_lines(text), [])


_TABLE_RE = re.compile(r"\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def key_lines(text: str) -> dict[Path, int]:
    """Where each table and key is defined (1-based). Approximate but never wrong for plain files."""
    lines: dict[Path, int] = {}
    table: Path = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _TABLE_RE.match(line):
            table = _split_key(m.group(1))
            lines.setdefault(table, number)
        elif m := _KEY_RE.match(line):
            lines.setdefault(table + _split_key(m.group(1)), number)
    return lines


def _split_key(key: str) -> Path:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", key)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


# --- schema walk -----------------------------------------------------------------


def check_settings(toml: TomlFile, machine: bool) -> dict[str, Any]:
    """The valid part of `toml.data` (nested dicts); every bad key or value adds a problem.
    A folder's file (`machine` false) loses its machine-only keys, each with a warning."""
    if machine:
        return _check_table(Settings, dict(toml.data), (), toml)
    clean = _check_table(Settings, _drop_machine_only(toml.data, (), toml), (), toml)
    _drop_over_limits(clean, (), toml)
    return clean


def _schema_type(path: Path) -> Any:
    """The schema's type at `path` (a dataclass for a table), None for a key it does not know."""
    cls: Any = Settings
    for key in path:
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if key not in hints:
            return None
        cls = hints[key]
    return cls


def _ignored(toml: TomlFile, where: Path, why: str) -> None:
    toml.problems.append(
        warning(toml.file, toml.line(where), f"{_name(where)} ignored: {why} honoured only from the machine's {MACHINE_FILE}")
    )


def _drop_machine_only(data: dict[str, Any], path: Path, toml: TomlFile) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in data.items():
        where = path + (key,)
        kind = _schema_type(where)
        why = machine_only(where) if kind is not None else ""
        if why and isinstance(value, dict) and value:
            for sub in sorted(value):
                _ignored(toml, where + (sub,), why)
        elif why:
            _ignored(toml, where, why)
        elif isinstance(value, dict) and dataclasses.is_dataclass(kind):
            kept[key] = _drop_machine_only(value, where, toml)
        else:
            kept[key] = value  # allowed, or unknown (an error for _check_table)
    return kept


def _drop_over_limits(clean: dict[str, Any], path: Path, toml: TomlFile) -> None:
    for key, value in list(clean.items()):
        where = path + (key,)
        if isinstance(value, dict):
            _drop_over_limits(value, where, toml)
        elif why := folder_limit(where, value):
            del clean[key]
            toml.problems.append(
                warning(toml.file, toml.line(where),
                        f"{_name(where)} = {_toml_repr(value)} ignored: {why} honoured only from the machine's {MACHINE_FILE}")
            )


def _check_table(cls: type, data: dict[str, Any], path: Path, toml: TomlFile) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    clean: dict[str, Any] = {}
    for key, value in data.items():
        where = path + (key,)
        if key not in names:
            toml.problems.append(error(toml.file, toml.line(where), _unknown(key, path, names)))
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                toml.problems.append(error(toml.file, toml.line(where), f"{_name(where)} should be a table [{'.'.join(where)}]"))
                continue
            clean[key] = _check_table(hint, value, where, toml)
            continue
        message = _type_error(hint, value) or _value_error(where, value)
        if message:
            toml.problems.append(error(toml.file, toml.line(where), f"{_name(where)}: {message}"))
            continue
        clean[key] = tuple(value) if isinstance(value, list) else float(value) if hint is float else value
    return clean


def _unknown(key: str, path: Path, names: list[str]) -> str:
    where = f"in [{'.'.join(path)}]" if path else "at the top level"
    message = f"unknown key '{key}' {where}"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if not close and not path:
        sections = {f.name: _subfields(f) for f in dataclasses.fields(Settings)}
        for section, fields in sections.items():
            if key in fields:
                return message + f" (did you mean '{key}' in [{section}]?)"
    return message + (f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(names)})")


def _subfields(f: dataclasses.Field) -> list[str]:
    hint = typing.get_type_hints(Settings)[f.name]
    return [g.name for g in dataclasses.fields(hint)]


def _name(path: Path) -> str:
    return f"[{'.'.join(path[:-1])}] {path[-1]}" if len(path) > 1 else path[0]


def _type_error(hint: Any, value: Any) -> str:
    if hint is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif hint is int:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif hint is float:
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif hint is str:
        ok, want = isinstance(value, str), "a quoted string"
    elif typing.get_origin(hint) is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        want = 'a list of strings, e.g. ["usb", "removable"]'
    else:  # a type this walker does not know: accept nothing silently
        ok, want = False, str(hint)
    return "" if ok else f"should be {want}, not {_toml_repr(value)}"


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if len(value) < 40 else "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value) if len(str(value)) < 40 else type(value).__name__


def _value_error(path: Path, value: Any) -> str:
    check = _VALUE_CHECKS.get(path)
    return check(value) if check else ""


def _range(low: float, high: float | None = None) -> Any:
    def check(value: float) -> str:
        if value < low or (high is not None and value > high):
            return f"{value} is out of range ({low}..{high})" if high is not None else f"should be at least {low}"
        return ""

    return check


def _passphrase(value: str) -> str:
    if len(value) == 64:  # a raw WPA key rather than a passphrase
        return "" if all(c in "0123456789abcdefABCDEF" for c in value) else "a 64-character WPA key must be hexadecimal"
    if value and not 8 <= len(value) <= 63:
        return f"a WPA passphrase needs 8 to 63 characters, this one has {len(value)}"
    if value and not all(0x20 <= ord(c) < 0x7F for c in value):
        return "a WPA passphrase may contain only printable ASCII characters"
    return ""


def _ssid(value: str) -> str:
    size = len(value.encode("utf-8"))
    return f"an SSID is at most 32 bytes, this one has {size}" if size > 32 else ""


LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _label(value: str) -> str:
    if LABEL_RE.fullmatch(value):
        return ""
    return (f"{_toml_repr(value)} is not a name students can type: 1 to 63 letters (a-z), digits and hyphens, "
            "not starting or ending with a hyphen (e.g. \"conjuring\" or \"room-4\")")


def _accept(value: tuple[str, ...]) -> str:
    bad = [v for v in value if v not in USB_ACCEPT]
    return f"unknown kind {bad[0]!r} (use {', '.join(USB_ACCEPT)})" if bad else ""


_VALUE_CHECKS: dict[Path, Any] = {
    ("hub", "port"): _range(1, 65535),
    ("hub", "keep_images"): _range(1),
    ("hub", "health_timeout"): _range(1),
    ("hub", "spawn_timeout"): _range(1),
    ("hub", "http_timeout"): _range(1),
    ("hub", "concurrent_spawn_limit"): _range(0),
    ("hub", "idle_timeout"): _range(0),
    ("hub", "switch_idle"): _range(0),
    ("hub", "switch_at"): lambda v: "" if not v or CLOCK_RE.fullmatch(v) else f'"{v}" is not a time of day like "12:30"',
    ("hub", "cpu_limit"): _range(0),
    ("hub", "mem_limit"): lambda v: "" if not v or MEM_RE.fullmatch(v) else f'"{v}" is not a size like "512M" or "2G"',
    ("hub", "base_image"): lambda v: "" if not v or IMAGE_RE.fullmatch(v) else f'"{v}" is not an image name like "debian:bookworm"',
    ("hub", "prewarm_until"): lambda v: "" if not v or CLOCK_RE.fullmatch(v) else f'"{v}" is not a time of day like "08:30"',
    ("hub", "preload"): lambda v: next((f'"{m}" is not a module name like "numpy" or "scipy.stats"' for m in v
                                        if not MODULE_RE.fullmatch(m)), ""),
    ("hub", "home_dir"): lambda v: "" if not v or v.startswith("/") else "should be an absolute path",
    ("hub", "shm_size"): lambda v: "" if not v or SHM_RE.fullmatch(v) else f'"{v}" is not a size like "4g" or "512m"',
    ("hub", "gpus"): lambda v: "" if v in ("", "all") or re.fullmatch(r"[1-9][0-9]{0,2}", v) else f'should be "all" or a number of GPUs like "1", not {_toml_repr(v)}',
    ("network", "serve"): lambda v: "" if v.strip() else 'should name a NetworkManager connection, or "none"',
    ("network", "name"): _label,
    ("network", "hotspot", "ssid"): _ssid,
    ("network", "hotspot", "passphrase"): _passphrase,
    ("network", "hotspot", "band"): lambda v: "" if v in CHANNELS else f'should be "bg" (2.4 GHz) or "a" (5 GHz), not "{v}"',
    ("network", "hotspot", "channel"): _range(0),
    ("network", "hotspot", "country"): lambda v: "" if not v or re.fullmatch(r"[A-Za-z]{2}", v) else "should be a two-letter country code like \"GB\"",
    ("usb", "accept"): _accept,
    ("usb", "max_files"): _range(1),
    ("usb", "max_bytes"): _range(1),
    ("usb", "trust"): lambda v: "" if v in ("enrolled", "any") else f'should be "enrolled" or "any", not {_toml_repr(v)}',
    ("usb", "max_file_bytes"): _range(1),
    ("usb", "loop_images"): lambda v: "" if not v or v.startswith("/") else "should be an absolute path",
}


# --- merge and build -----------------------------------------------------------------


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` wins key by key; tables merge recursively."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        kwargs[f.name] = build(hints[f.name], value) if dataclasses.is_dataclass(hints[f.name]) else value
    return cls(**kwargs)


def check_channel(settings: Settings, toml: TomlFile | None) -> list[Problem]:
    """The channel must exist in the band (checked on the merged settings)."""
    hotspot = settings.network.hotspot
    if hotspot.channel and hotspot.channel not in CHANNELS.get(hotspot.band, frozenset()):
        file = toml.file if toml else "conjuring.toml"
        channel, band = ("network", "hotspot", "channel"), ("network", "hotspot", "band")
        line = toml.line(channel if channel in toml.lines else band) if toml else 0
        band = "2.4 GHz (band \"bg\": 1 to 14)" if hotspot.band == "bg" else "5 GHz (band \"a\")"
        return [error(file, line, f"[network.hotspot] channel {hotspot.channel} is not a {band} channel")]
    return []


def parse_settings(raw: bytes | dict[str, Any], file: str, machine: bool = True) -> tuple[Settings, list[Problem]]:
    """One conjuring.toml on its own (bytes, or already-parsed TOML data): Settings
    (defaults where a value is invalid) and its problems."""
    toml = read_toml(raw, file) if isinstance(raw, (bytes, bytearray)) else TomlFile(file, dict(raw), {}, [])
    clean = check_settings(toml, machine)
    settings = build(Settings, clean)
    return settings, toml.problems + check_channel(settings, toml)


def all_keys(cls: type = Settings, path: Path = ()) -> list[tuple[Path, Any]]:
    """Every leaf key of the schema with its default, e.g. (("hub", "port"), 8989)."""
    keys: list[tuple[Path, Any]] = []
    hints = typing.get_type_hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += all_keys(hints[f.name], path + (f.name,))
        else:
            keys.append((path + (f.name,), getattr(default, f.name)))
    return keys


__all__ = ["MACHINE_FILE", "TomlFile", "all_keys", "build", "check_settings", "merge", "parse_settings", "read_toml"]
