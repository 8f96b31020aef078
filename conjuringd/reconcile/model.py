"""Desired state, observed state and the actions that move one to the other.

All frozen: `plan()` is a pure function of a Desired and an Observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conjuringd.config.model import CustomConfig, Settings
from conjuringd.merge import MergeSummary
from conjuringd.reconcile.switch import Activity


@dataclass(frozen=True)
class ConfigHashes:
    config: str  # everything in the folder
    image: str  # the image tag: chain of every image layer
    layers: tuple[tuple[str, str], ...]  # (layer name, chained digest), base first
    restart: str  # inputs that need a hub restart but no rebuild
    users: str  # users.csv (live)
    files: str  # shared/ + home_default/ (live)


@dataclass(frozen=True)
class Desired:
    hashes: ConfigHashes
    config: CustomConfig = field(repr=False)
    config_dir: str  # the immutable snapshot folder
    hub_enabled: bool = True

    @property
    def settings(self) -> Settings:
        return self.config.settings


@dataclass(frozen=True)
class ContainerState:
    id: str
    image_hash: str
    restart_hash: str
    running: bool
    users_hash: str = ""  # last users.csv applied to this container
    files_hash: str = ""  # last shared/ + home_default/ applied
    ours: bool = True  # its owner label matches this box's state folder and hub token
    checked: bool = True  # it passed a health check after it was created (recorded in our state)


@dataclass(frozen=True)
class HubObserved:
    images: frozenset[str] = frozenset()  # image hashes present locally
    container: ContainerState | None = None
    staged: ContainerState | None = None  # a new hub started beside the serving one, waiting to take over
    staged_at: datetime | None = None  # when it was staged (its label)
    activity: Activity | None = None  # who works on the serving hub; None when it was not asked


@dataclass(frozen=True)
class NetworkObserved:
    serve: str  # the wanted connection id ("none" = unmanaged)
    state: str  # "activated" | "activating" | "inactive" | "absent" | "unmanaged"
    addresses: tuple[str, ...] = ()
    ssid: str = ""


@dataclass(frozen=True)
class NameRecord:
    """What the box publishes over mDNS: `<label>.local` -> each address, and the hub as `_http._tcp`."""

    base: str  # the configured name, lower-cased ([network] name)
    label: str  # the name in use: `base`, or `base-N` after N-1 collisions
    addresses: tuple[str, ...]  # IPv4 addresses students reach the hub on
    port: int  # the hub port (advertised in the service record)
    attempt: int = 1

    @property
    def fqdn(self) -> str:
        return f"{self.label}.local"


@dataclass(frozen=True)
class NamesObserved:
    """The mDNS publisher (avahi-daemon) as last seen, and where students can reach the hub."""

    avahi: str  # "running" | "starting" (avahi busy with its own host name) | "absent" | "no bus"
    record: NameRecord | None = None  # what our entry group holds (committed), None = nothing published
    group: str = ""  # "registering" | "established" | "collision" | "failure" | "" (no group)
    detail: str = ""  # what avahi or the bus said when something failed
    addresses: tuple[str, ...] = ()  # the addresses to publish (the serve connection's, else the host's)


@dataclass(frozen=True)
class StickObserved:
    """A candidate stick that udev reported and that has work pending."""

    device: str  # e.g. /dev/sdb1
    key: str  # identity of this insertion: fs UUID + udev sequence number
    label: str = ""
    pending: str = "import"  # "import" | "report"


@dataclass(frozen=True)
class Observed:
    hub: HubObserved | None = None  # None when the hub is not managed
    network: NetworkObserved | None = None  # None when networking is not managed
    failed_builds: frozenset[str] = frozenset()  # image hashes whose build failed
    sticks: tuple[StickObserved, ...] = ()
    names: NamesObserved | None = None  # None when no mDNS publisher is configured (--mdns none)
    switch_requested: bool = False  # the teacher asked a waiting new hub to take over now


# --- actions -----------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    reason: str = field(default="", compare=False, kw_only=True)

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class ImportStick(Action):
    device: str
    key: str

    def describe(self) -> str:
        return f"import configuration from stick {self.device}"


@dataclass(frozen=True)
class ActivateNetwork(Action):
    connection: str

    def describe(self) -> str:
        return f"activate network {self.connection!r}"


@dataclass(frozen=True)
class PublishName(Action):
    record: NameRecord

    def describe(self) -> str:
        return f"publish {self.record.fqdn} -> {', '.join(self.record.addresses)}"


@dataclass(frozen=True)
class WithdrawName(Action):
    fqdn: str

    def describe(self) -> str:
        return f"withdraw {self.fqdn}"


@dataclass(frozen=True)
class BuildImage(Action):
    image_hash: str

    def describe(self) -> str:
        return f"build image {self.image_hash[:12]}"


@dataclass(frozen=True)
class ReplaceContainer(Action):
    image_hash: str
    restart_hash: str

    def describe(self) -> str:
        return f"(re)create hub container on image {self.image_hash[:12]}"


@dataclass(frozen=True)
class StageContainer(Action):
    """Start the new hub beside the serving one, on a spare port, and health-check it; it waits there."""

    image_hash: str
    restart_hash: str

    def describe(self) -> str:
        return f"stage new hub on image {self.image_hash[:12]} beside the serving one"


@dataclass(frozen=True)
class DropStaged(Action):
    container_id: str

    def describe(self) -> str:
        return f"remove staged hub {self.container_id[:12]}"


@dataclass(frozen=True)
class CheckContainer(Action):
    """Health-check a container that was created but never checked; roll back to the previous one if it fails."""

    container_id: str

    def describe(self) -> str:
        return f"health-check hub container {self.container_id[:12]}"


@dataclass(frozen=True)
class StartContainer(Action):
    container_id: str

    def describe(self) -> str:
        return f"start hub container {self.container_id[:12]}"


@dataclass(frozen=True)
class SyncUsers(Action):
    users_hash: str

    def describe(self) -> str:
        return "sync users live"


@dataclass(frozen=True)
class SyncFiles(Action):
    files_hash: str

    def describe(self) -> str:
        return "sync shared/ and home_default/ live"


@dataclass(frozen=True)
class WriteStickReport(Action):
    device: str
    key: str

    def describe(self) -> str:
        return f"write report to stick {self.device}"


# --- facts exchanged with the stick adapter ------------------------------------


@dataclass(frozen=True)
class ImportOutcome:
    """What importing a configuration folder did."""

    result: str  # "applied" | "unchanged" | "invalid" | "failed"
    config_hash: str = ""
    problems: tuple = ()  # tuple[Problem, ...]
    message: str = ""  # for "failed": what went wrong, in words
    merge: MergeSummary | None = None  # a stick or `apply` merged onto the active configuration: what came from where


@dataclass(frozen=True)
class ReportFacts:
    """What the reconciler knows once it has converged (or given up), for a stick's report."""

    hub_state: str  # e.g. "serving", "build failed", "hub disabled"
    hub_urls: tuple[str, ...] = ()
    users: int = 0
    admins: int = 0
    changes: tuple[str, ...] = ()  # e.g. "rebuilt layers: requirements, runtime", "users synced live"
    build_log_tail: tuple[str, ...] = ()
    active_config: str = ""  # hash of the configuration now active
    active_source: str = ""  # e.g. "stick CONJURING (UUID 1234-ABCD) at 2026-11-26T14:00Z"
    # (name, password, admin) of active users whose password the box made ("(generated)" in users.csv)
    generated_logins: tuple[tuple[str, str, bool], ...] = field(default=(), repr=False)
    address: str = ""  # what students type (conjuringd.urls.student_address)
    students_online: int | None = None  # students with a running server (None: not known)
    students_recent: int | None = None  # of them, active in the last 10 minutes
    seconds: float = 0.0  # how long the import and what it set off took
    sheet: Any = field(default=None, repr=False)  # conjuringd.sheet.ClassSheet (it holds every password)
