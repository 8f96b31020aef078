"""The validated configuration, as frozen dataclasses.

`CustomConfig` is what a `custom/` folder says; `Settings` is `conjuring.toml`
(machine file merged with the folder's own). Both are built only by
`conjuringd.config.load`, which validates everything first.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class User:
    name: str
    password: str = field(repr=False)
    admin: bool
    line: int  # line in users.csv, for messages
    generated: bool = False  # users.csv said "(generated)": the box makes the password (conjuringd.passwords)


@dataclass(frozen=True)
class Kernel:
    """An extra kernel: `environment-<name>.yml` (conda) or `requirements-<name>.txt` (venv)."""

    name: str
    kind: str  # "conda" | "venv"
    file: str  # relative path inside custom/
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class HotspotSettings:
    ssid: str = ""
    passphrase: str = field(default="", repr=False)
    band: str = "bg"  # "bg" (2.4 GHz) or "a" (5 GHz)
    channel: int = 0  # 0 = let NetworkManager choose
    country: str = ""  # ISO 3166 alpha-2, "" = leave the regulatory domain alone


@dataclass(frozen=True)
class NetworkSettings:
    serve: str = "Hotspot"  # connection id, or "none"
    build: str = ""  # connection id activated for builds, "" = no switching
    name: str = "conjuring"  # published over mDNS as <name>.local (a DNS label; used lower-cased)
    hotspot: HotspotSettings = HotspotSettings()
    captive_portal: bool = True  # machine-only: on a shared serve connection, every name -> the box, port 80 -> login


@dataclass(frozen=True)
class HubSettings:
    port: int = 8989
    base_image: str = ""  # "" = FROM of base.Dockerfile, else the default base
    bootstrap_base: bool = True  # mmdebstrap a Debian base when the pull fails
    keep_images: int = 3
    health_timeout: int = 180  # seconds for a new hub to answer and log in
    spawn_timeout: int = 300
    http_timeout: int = 240
    concurrent_spawn_limit: int = 0  # 0 = derived from the number of CPUs
    idle_timeout: int = 3600  # seconds before an idle server is culled; 0 = never
    mem_limit: str = ""  # per student, e.g. "1G"; "" = no limit
    cpu_limit: float = 0.0  # per student, in CPUs; 0 = no limit
    prewarm: bool = False
    prewarm_until: str = ""  # "HH:MM" local time: prewarmed servers are kept from idle culling until then; "" = 3 hours
    preload: tuple[str, ...] = ()  # modules every kernel starts with, imported once (e.g. "numpy")
    home_dir: str = ""  # host folder of student homes; "" = <state_dir>/home
    shm_size: str = ""  # the hub container's /dev/shm, e.g. "4g" (the original's compose file); "" = Docker's 64M
    gpus: str = ""  # host GPUs given to the hub container: "" = none, "all", or how many (machine-only)
    switch_idle: int = 10  # minutes without activity before a waiting new hub replaces the serving one
    switch_at: str = ""  # "HH:MM" local time: a waiting new hub replaces the serving one then; "" = only when idle


@dataclass(frozen=True)
class UsbSettings:
    enabled: bool = True
    accept: tuple[str, ...] = ("usb", "removable")  # also "loop", "mmc", "any"
    max_files: int = 20000
    max_bytes: int = 2 * 1024**3
    max_file_bytes: int = 1024**3  # one larger file is skipped and named in the report, the rest is imported
    backup: bool = True
    trust: str = "enrolled"  # "enrolled": only enrolled sticks (the first one on a new box is enrolled); "any"
    loop_images: str = ""  # loop devices count only when backed by a file under this folder; "" = any of this machine's


@dataclass(frozen=True)
class Settings:
    hub: HubSettings = HubSettings()
    network: NetworkSettings = NetworkSettings()
    usb: UsbSettings = UsbSettings()


@dataclass(frozen=True)
class FileTree:
    """A folder's regular files: relative POSIX path -> content digest (sha256 hex)."""

    files: tuple[tuple[str, str], ...] = ()

    def digest_items(self) -> tuple[tuple[str, str], ...]:
        return self.files


@dataclass(frozen=True)
class CustomConfig:
    """Everything a `custom/` folder says, validated."""

    root: str  # the folder it was read from
    users: tuple[User, ...]
    apt_packages: tuple[str, ...]
    requirements: bytes = field(repr=False)  # requirements.txt, verbatim
    environment: bytes = field(repr=False)  # environment.yml, verbatim ("" if absent)
    kernels: tuple[Kernel, ...]
    base_dockerfile: bytes = field(repr=False)  # verbatim ("" = default base)
    base_image: str  # the FROM of base.Dockerfile, "" if absent
    certs: tuple[tuple[str, bytes], ...] = field(repr=False)  # (name, PEM)
    hub_config: bytes = field(repr=False)  # srv/jupyterhub_config.py, verbatim
    shared: FileTree
    home_default: FileTree
    settings: Settings
    toml: bytes = field(repr=False)  # custom/conjuring.toml, verbatim
    srv: FileTree = FileTree()  # every file of srv/ (copied into the hub's /srv/jupyterhub, root-only)

    @property
    def admins(self) -> tuple[User, ...]:
        return tuple(u for u in self.users if u.admin)
