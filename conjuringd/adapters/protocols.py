"""The small interfaces the reconciler drives. One adapter module per external system.

Every method may raise `TransientError` (the system is unreachable right now:
back off and retry). Hub builds raise `BuildFailed`. Adapters never decide
*what* to do, only do it; `plan()` decides.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from conjuringd.config.model import NetworkSettings
from conjuringd.reconcile.model import (
    Desired,
    HubObserved,
    ImportOutcome,
    NameRecord,
    NamesObserved,
    NetworkObserved,
    ReportFacts,
    StickObserved,
)

Progress = Callable[[str], None]  # one phase line, e.g. "building image: step 5/12"
Wake = Callable[[str], None]  # an event source wakes the reconciler with a reason


class HubAdapter(Protocol):
    async def observe(self) -> HubObserved: ...

    async def build_image(self, desired: Desired, progress: Progress) -> None:
        """Build the image tagged `desired.hashes.image`; raise BuildFailed on a build error."""

    async def replace_container(self, desired: Desired, progress: Progress) -> None:
        """Start a container on the desired image, keep it only once healthy, else roll back."""

    async def check_container(self, desired: Desired, container_id: str, progress: Progress) -> None:
        """Health-check a container that was created but never checked; roll back (HubUnhealthy) if it fails."""

    async def stage_container(self, desired: Desired, progress: Progress) -> None:
        """Start and health-check the new hub beside the serving one; HubUnhealthy if it fails (removed again)."""

    async def drop_staged(self, container_id: str = "") -> None: ...

    async def start_container(self, container_id: str) -> None: ...

    async def sync_users(self, desired: Desired) -> None: ...

    async def sync_files(self, desired: Desired) -> None: ...

    async def prune_images(self, keep: frozenset[str]) -> None:
        """Remove our images except those in `keep` (and except any in use)."""

    async def close(self) -> None: ...


class NetworkAdapter(Protocol):
    async def observe(self, spec: NetworkSettings) -> NetworkObserved: ...

    async def activate_serve(self, spec: NetworkSettings) -> None: ...

    def build_network(self, spec: NetworkSettings) -> "BuildNetwork":
        """An async context manager: the build network is up inside it, serve again after."""

    async def start(self, wake: Wake) -> None:
        """Subscribe to signals that should wake the reconciler (state changes, NM restarts)."""

    async def close(self) -> None: ...


class NamePublisher(Protocol):
    """Publishes the box's mDNS name; never raises: trouble is observed state (`NamesObserved`)."""

    async def start(self, wake: Wake) -> None:
        """Connect and subscribe (the publisher's own state changes, it coming and going)."""

    async def observe(self, addresses: tuple[str, ...]) -> NamesObserved:
        """What is published now; `addresses` (what should be) is passed through for plan()."""

    async def publish(self, record: NameRecord) -> None: ...

    async def withdraw(self) -> None: ...

    async def close(self) -> None:
        """Withdraw what is published and disconnect."""


class BuildNetwork(Protocol):
    async def __aenter__(self) -> None: ...

    async def __aexit__(self, *exc: object) -> None: ...


class StickAdapter(Protocol):
    async def start(self, wake: Wake) -> None:
        """Subscribe to udev first, then enumerate what is already plugged in."""

    def observe(self) -> tuple[StickObserved, ...]: ...

    async def import_stick(self, device: str, key: str, importer: Importer) -> None:
        """Mount, import (via `importer`), back up homes if asked; remember the result for the report."""

    async def write_report(self, device: str, key: str, report: ReportFacts) -> None: ...

    async def close(self) -> None: ...


Importer = Callable[[str, dict], Awaitable[ImportOutcome]]
"""`await importer(folder, source)` validates `folder` and makes it the active configuration;
`source` describes where it came from (e.g. {"kind": "stick", "label": ..., "uuid": ..., "device": ...})."""
