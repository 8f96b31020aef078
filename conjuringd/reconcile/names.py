"""The name students type (`conjuring.local`): what to publish, and what to say about it. Pure.

The reconciler observes the publisher (avahi-daemon through `adapters/avahi.py`) and the
addresses students reach the hub on; `name_actions()` decides whether to publish, re-publish
(addresses or port changed, or the name collided: then `conjuring-2`, `conjuring-3`, ...) or
withdraw; `name_status()` says in words what students can type.
"""

from __future__ import annotations

import ipaddress
from typing import Callable

from conjuringd.reconcile.model import Action, NameRecord, NamesObserved, NetworkObserved, PublishName, WithdrawName

MAX_ATTEMPTS = 9  # conjuring, conjuring-2 ... conjuring-9; after that the box stops trying (status says why)
LABEL_MAX = 63


def label_for(base: str, attempt: int) -> str:
    """`base` for the first attempt, else `base-N`, cut so the label stays a valid DNS label."""
    if attempt <= 1:
        return base
    suffix = f"-{attempt}"
    return base[: LABEL_MAX - len(suffix)].rstrip("-") + suffix


def publishable(addresses) -> tuple[str, ...]:
    """The IPv4 addresses (prefix length dropped) worth publishing: no loopback, no link-local, no duplicates."""
    found: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("/")[0])
        except ValueError:
            continue
        if address.version == 4 and not (address.is_loopback or address.is_link_local or address.is_unspecified):
            if str(address) not in found:
                found.append(str(address))
    return tuple(found)


def host_addresses(network: NetworkObserved | None, local: Callable[[], tuple[str, ...]]) -> tuple[str, ...]:
    """The serve connection's addresses when it is up; the host's own (`local()`, asked only then) when
    networking is not managed; nothing while a managed serve connection is not up (a stale address would mislead)."""
    if network is None or network.state == "unmanaged":
        return publishable(local())
    return publishable(network.addresses) if network.state == "activated" else ()


def name_actions(name: str, port: int, names: NamesObserved | None) -> list[Action]:
    if names is None or names.avahi != "running":
        return []  # not configured, or avahi is away: its return wakes the reconciler
    base = name.lower()
    record = names.record
    if not names.addresses:
        return [WithdrawName(record.fqdn, reason="no address to publish")] if record else []
    attempt = 1
    if record is not None and record.base == base:
        attempt = record.attempt
        if names.group == "collision":
            if attempt >= MAX_ATTEMPTS:
                return []
            attempt += 1
    wanted = NameRecord(base, label_for(base, attempt), names.addresses, port, attempt)
    if record == wanted and names.group != "collision":
        return []  # in place (registering, established, or failed: a failure waits for avahi to change)
    return [PublishName(wanted, reason=_reason(record, wanted, names.group))]


def _reason(record: NameRecord | None, wanted: NameRecord, group: str) -> str:
    if record is None:
        return "nothing published yet"
    if group == "collision":
        return f"{record.fqdn} is taken on the network: trying {wanted.fqdn}"
    if record.base != wanted.base:
        return f"[network] name changed ({record.base} -> {wanted.base})"
    return "addresses or hub port changed"


def name_status(name: str, names: NamesObserved | None, hub_urls: tuple[str, ...]) -> dict:
    """Status keys: `mdns_name` is the published name only once avahi has established it, else "";
    `mdns_state` says where publishing stands, `mdns_error` what is wrong and what to do, in words."""
    fqdn = f"{name.lower()}.local"
    fallback = f"; students can use {hub_urls[0]}" if hub_urls else ""
    if names is None:
        return {"mdns_name": "", "mdns_state": "not managed", "mdns_error": None}
    record, group = names.record, names.group
    if names.avahi == "no bus":
        error = f"the system D-Bus is unreachable ({names.detail}), so {fqdn} is not published{fallback}"
        return {"mdns_name": "", "mdns_state": "no system bus", "mdns_error": error}
    if names.avahi == "absent":
        error = f"avahi-daemon is not running: install (or start) avahi-daemon to publish {fqdn}{fallback}"
        return {"mdns_name": "", "mdns_state": "avahi absent", "mdns_error": error}
    if names.avahi == "starting":
        return {"mdns_name": "", "mdns_state": "avahi starting", "mdns_error": None}
    if record is None:
        error = None if names.addresses else f"no network address to publish {fqdn} on yet"
        return {"mdns_name": "", "mdns_state": "not published", "mdns_error": error}
    if group == "established":
        note = None if record.label == record.base else f"{fqdn} is taken by another device on the network: " \
                                                         f"the box answers as {record.fqdn}"
        return {"mdns_name": record.fqdn, "mdns_state": "established", "mdns_error": note}
    if group == "collision":
        error = f"{record.fqdn} is taken by another device on the network (gave up after {MAX_ATTEMPTS} names)" \
                f"{fallback}"
        return {"mdns_name": "", "mdns_state": "collision", "mdns_error": error}
    if group == "failure":
        error = f"avahi-daemon could not publish {record.fqdn}: {names.detail or 'no reason given'}{fallback}"
        return {"mdns_name": "", "mdns_state": "failure", "mdns_error": error}
    return {"mdns_name": "", "mdns_state": "registering", "mdns_error": None}
