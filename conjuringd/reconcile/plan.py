"""plan(desired, observed) -> [Action]: pure, no I/O.

Order matters and is the order of execution: sticks are imported first (they
may change what is desired), then the serve network, then the image, the
container, and the live syncs; the mDNS name is published once no network action is pending,
in a round of its own (before the hub: a long build must not keep a name collision unresolved); stick reports come last, once the rest has
converged, so they can say what the import cost.
"""

from __future__ import annotations

from conjuringd.reconcile import switch
from conjuringd.reconcile.model import (
    Action,
    ActivateNetwork,
    BuildImage,
    CheckContainer,
    Desired,
    DropStaged,
    HubObserved,
    ImportStick,
    NetworkObserved,
    Observed,
    ReplaceContainer,
    StageContainer,
    StartContainer,
    SyncFiles,
    SyncUsers,
    WriteStickReport,
)
from conjuringd.reconcile.names import name_actions


def plan(desired: Desired | None, observed: Observed) -> list[Action]:
    imports = [
        ImportStick(s.device, s.key, reason=f"stick {s.label or s.device} inserted")
        for s in observed.sticks
        if s.pending == "import"
    ]
    if imports:
        return imports
    actions: list[Action] = []
    if desired is not None:
        actions += _network_actions(observed.network)
        if not actions:
            actions = name_actions(desired.settings.network.name, desired.settings.hub.port, observed.names)
            if actions:
                return actions  # alone: publish() waits for avahi's verdict, a collision is handled before a build
        if desired.hub_enabled and observed.hub is not None:
            actions += _hub_actions(desired, observed.hub, observed.failed_builds, observed.switch_requested)
    if actions:
        return actions
    return [
        WriteStickReport(s.device, s.key, reason="import finished")
        for s in observed.sticks
        if s.pending == "report"
    ]


# Activated already, on its way, not ours to manage, or NetworkManager trouble in this pass (retried later).
_NETWORK_LEFT_ALONE = frozenset({"activated", "activating", "unmanaged", "unavailable", "failed"})


def _network_actions(network: NetworkObserved | None) -> list[Action]:
    if network is None or network.state in _NETWORK_LEFT_ALONE:
        return []
    return [ActivateNetwork(network.serve, reason=f"serve network is {network.state}")]


def _hub_actions(desired: Desired, hub: HubObserved, failed_builds: frozenset[str],
                 switch_requested: bool = False) -> list[Action]:
    wanted = desired.hashes
    container = hub.container
    foreign = container is not None and not container.ours
    if container is not None and not foreign and not container.checked:
        # created, but the daemon stopped before its health check: check it (or roll back) before anything else
        return [CheckContainer(container.id, reason="hub container was never health-checked (interrupted replacement)")]
    image_ready = wanted.image in hub.images
    if not image_ready and wanted.image not in failed_builds:
        return [BuildImage(wanted.image, reason=_image_reason(desired, hub))]
    container_outdated = foreign or container is None or (container.image_hash, container.restart_hash) != (
        wanted.image,
        wanted.restart,
    )
    replaceable = image_ready and container_outdated and replace_key(wanted.image, wanted.restart) not in failed_builds
    if hub.staged is not None and not replaceable:
        return [DropStaged(hub.staged.id, reason="the staged hub is no longer wanted")]
    if replaceable:
        waiting = waiting_switch(desired, hub, switch_requested)
        if waiting is None:
            return [ReplaceContainer(wanted.image, wanted.restart, reason=_container_reason(desired, hub))]
        staged = hub.staged
        if staged is None or not staged.checked or (staged.image_hash, staged.restart_hash) != (wanted.image, wanted.restart):
            return [StageContainer(wanted.image, wanted.restart, reason=waiting.describe())]
    if container is None or foreign:
        return []  # no hub of ours to run or sync: the image failed to build, or its container failed to start
    if not container.running:
        return [StartContainer(container.id, reason="hub container is stopped")]
    actions: list[Action] = []  # live changes never wait for a switch: they go to the serving hub
    if container.users_hash != wanted.users:
        actions.append(SyncUsers(wanted.users, reason="users.csv changed"))
    if container.files_hash != wanted.files:
        actions.append(SyncFiles(wanted.files, reason="shared/ or home_default/ changed"))
    return actions


def waiting_switch(desired: Desired, hub: HubObserved, switch_requested: bool) -> switch.SwitchHold | None:
    """What keeps a new hub from replacing the serving one now; None: replace at once (nobody is working,
    the teacher asked, switch_at has come, or there is no serving hub of ours to keep)."""
    container = hub.container
    if container is None or not container.ours or not container.running:
        return None
    return switch.hold(desired.settings.hub, hub.activity, switch_requested, hub.staged_at)


def replace_key(image_hash: str, restart_hash: str) -> str:
    """How a failed container replacement is remembered among the failed builds."""
    return f"{image_hash}:{restart_hash}"


def _image_reason(desired: Desired, hub: HubObserved) -> str:
    if hub.container is None:
        return "no hub image yet"
    return f"image inputs changed ({hub.container.image_hash[:12]} -> {desired.hashes.image[:12]})"


def _container_reason(desired: Desired, hub: HubObserved) -> str:
    container = hub.container
    if container is None:
        return "no hub container"
    if not container.ours:
        return "the hub container is not this box's (another state folder or hub token): replaced, never adopted"
    if container.image_hash != desired.hashes.image:
        return "hub image changed"
    return "restart inputs changed (srv/jupyterhub_config.py or [hub] settings)"


def pending_switch(desired: Desired | None, observed: Observed) -> switch.SwitchHold | None:
    """A new hub staged and ready for `desired`, waiting for the class: what it waits for; else None."""
    hub = observed.hub
    if desired is None or not desired.hub_enabled or hub is None or hub.staged is None or not hub.staged.checked:
        return None
    wanted = (desired.hashes.image, desired.hashes.restart)
    if (hub.staged.image_hash, hub.staged.restart_hash) != wanted or hub.container is None:
        return None
    if (hub.container.image_hash, hub.container.restart_hash) == wanted:
        return None
    return waiting_switch(desired, hub, observed.switch_requested)
