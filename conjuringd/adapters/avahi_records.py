"""avahi-daemon's D-Bus API in plain values: names, numbers and the calls one record becomes. Pure."""

from __future__ import annotations

from conjuringd.reconcile.model import NameRecord

AVAHI = "org.freedesktop.Avahi"
I_SERVER = AVAHI + ".Server"
I_GROUP = AVAHI + ".EntryGroup"
SERVER_PATH = "/"

IF_UNSPEC = -1  # every interface
PROTO_UNSPEC = -1  # announce over IPv4 and IPv6 multicast alike
PUBLISH_NO_REVERSE = 16  # no PTR record: the host's own name already owns the address's reverse name

SERVER_RUNNING = 2
SERVER_STATES = {0: "invalid", 1: "registering", 2: "running", 3: "collision", 4: "failure"}
GROUP_STATES = {0: "uncommitted", 1: "registering", 2: "established", 3: "collision", 4: "failure"}

# D-Bus errors meaning "avahi (or the bus) is not there right now"
GONE = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected",
})
COLLISION = AVAHI + ".CollisionError"  # a record of this name exists on this very avahi-daemon

MATCH_AVAHI = f"type='signal',sender='{AVAHI}'"  # resolved at delivery: survives avahi restarts
MATCH_OWNER = ("type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
               f"member='NameOwnerChanged',arg0='{AVAHI}'")

SERVICE_TYPE = "_http._tcp"


def service_name(record: NameRecord) -> str:
    return f"JupyterHub on {record.label}"


def entry_calls(record: NameRecord) -> list[tuple[str, str, list]]:
    """(member, signature, body) of the EntryGroup calls that publish `record`, before Commit."""
    calls: list[tuple[str, str, list]] = [
        ("AddAddress", "iiuss", [IF_UNSPEC, PROTO_UNSPEC, PUBLISH_NO_REVERSE, record.fqdn, address])
        for address in record.addresses
    ]
    txt = [b"path=/"]
    calls.append(("AddService", "iiussssqaay",
                  [IF_UNSPEC, PROTO_UNSPEC, 0, service_name(record), SERVICE_TYPE, "", record.fqdn, record.port, txt]))
    return calls


def group_state(code: int) -> str:
    return GROUP_STATES.get(code, f"state {code}")


def server_state(code: int) -> str:
    return SERVER_STATES.get(code, f"state {code}")
