"""Who may set each conjuring.toml key: an allow-list for folders (sticks), the rest machine-only.

A folder's conjuring.toml (a USB stick, or /etc/conjuring/custom) may set only the
keys under a prefix in `FOLDER_KEYS`, and some of those only within `FOLDER_LIMITS`.
Everything else is machine-only: honoured from /etc/conjuring/conjuring.toml alone.
Machine-only are the USB policy, keys that name a host path or a host device (gpus), and host
ports below 1024. A key added to the schema must be classified here (a unit test walks
every key): an unclassified key is machine-only, so a new key is never a stick's by accident.
"""

from __future__ import annotations

from typing import Any, Callable

Path = tuple[str, ...]

# prefix -> why a folder may not set it (said in the warning)
MACHINE_ONLY: dict[Path, str] = {
    ("usb",): "[usb] settings (the USB policy) are",
    ("hub", "home_dir"): "it names a host folder, so it is",
    ("hub", "gpus"): "it hands host devices (GPUs) to the hub, so it is",
    ("network", "captive_portal"): "it answers for every name and port 80 on the box's hotspot, so it is",
}

FOLDER_KEYS: frozenset[Path] = frozenset(
    {
        ("hub", "port"),  # a host port: 1024 and above only, see FOLDER_LIMITS
        ("hub", "base_image"),  # an image name, not a host path
        ("hub", "bootstrap_base"),
        ("hub", "keep_images"),
        ("hub", "health_timeout"),
        ("hub", "spawn_timeout"),
        ("hub", "http_timeout"),
        ("hub", "concurrent_spawn_limit"),
        ("hub", "idle_timeout"),
        ("hub", "mem_limit"),
        ("hub", "cpu_limit"),
        ("hub", "prewarm"),
        ("hub", "prewarm_until"),
        ("hub", "switch_idle"),
        ("hub", "switch_at"),
        ("hub", "preload"),
        ("hub", "shm_size"),  # the container's own shared memory, like mem_limit
        # NetworkManager connection names and the hotspot: the teacher's classroom network
        ("network", "serve"),
        ("network", "build"),
        ("network", "hotspot"),
        ("network", "name"),  # only changes what <name>.local answers: nothing secret of the machine's
    }
)

PRIVILEGED_PORTS = 1024


def _port(value: Any) -> str:
    if isinstance(value, int) and value < PRIVILEGED_PORTS:
        return f"ports below {PRIVILEGED_PORTS} are host ports that are"
    return ""


# key -> check of a folder's (already type-checked) value: "" when it may set it, else why not
FOLDER_LIMITS: dict[Path, Callable[[Any], str]] = {("hub", "port"): _port}


def _covered(path: Path, prefixes) -> Path | None:
    return next((p for p in prefixes if path[: len(p)] == p), None)


def machine_only(path: Path) -> str:
    """Why a folder may not set `path` ("" when it may, or when `path` is a table holding keys it
    may set). Unclassified keys are machine-only."""
    prefix = _covered(path, MACHINE_ONLY)
    if prefix is not None:
        return MACHINE_ONLY[prefix]
    holds_allowed = any(key[: len(path)] == path for key in FOLDER_KEYS)
    if _covered(path, FOLDER_KEYS) is None and not holds_allowed:
        return "it is a machine setting, so it is"
    return ""


def folder_limit(path: Path, value: Any) -> str:
    check = FOLDER_LIMITS.get(path)
    return check(value) if check else ""


def classification(path: Path) -> tuple[str, ...]:
    """Every rule covering `path` (a unit test asserts exactly one per schema key)."""
    found = [f"machine:{'.'.join(p)}" for p in MACHINE_ONLY if path[: len(p)] == p]
    found += [f"folder:{'.'.join(p)}" for p in FOLDER_KEYS if path[: len(p)] == p]
    return tuple(found)


__all__ = ["FOLDER_KEYS", "FOLDER_LIMITS", "MACHINE_ONLY", "classification", "folder_limit", "machine_only"]
