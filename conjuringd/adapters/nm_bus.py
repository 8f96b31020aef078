"""The D-Bus side of the NetworkManager adapter: one connection, proxies from bundled XML.

Proxies are built from the introspection XML in `nm_introspection/` with Node.parse (never
runtime introspection). Every failure that means "NetworkManager or the bus is not there
right now" becomes a TransientError, logged once until NetworkManager answers again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

import structlog
from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus
from dbus_next.errors import DBusError
from dbus_next.introspection import Node

from conjuringd.config.problems import TransientError

log = structlog.get_logger(__name__)

NM = "org.freedesktop.NetworkManager"
NM_PATH = "/org/freedesktop/NetworkManager"
SETTINGS_PATH = NM_PATH + "/Settings"
I_NM, I_SETTINGS, I_CONN = NM, NM + ".Settings", NM + ".Settings.Connection"
I_ACTIVE, I_DEVICE, I_WIFI, I_IP4 = NM + ".Connection.Active", NM + ".Device", NM + ".Device.Wireless", NM + ".IP4Config"
I_PROPS = "org.freedesktop.DBus.Properties"
KINDS = {
    "nm": (I_NM,), "settings": (I_SETTINGS,), "conn": (I_CONN,), "active": (I_ACTIVE,),
    "device": (I_DEVICE, I_WIFI), "ip4": (I_IP4,),
}
NM_GONE = {
    "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected",
}
OBJECT_GONE = {"org.freedesktop.DBus.Error.UnknownObject", "org.freedesktop.DBus.Error.UnknownMethod",
               "org.freedesktop.DBus.Error.UnknownInterface"}
MATCH_NM = f"type='signal',sender='{NM}'"  # the daemon resolves the name at delivery: survives NM restarts


@dataclass(frozen=True)
class Conn:
    path: str
    id: str
    uuid: str
    type: str
    interface: str
    settings: dict = field(compare=False, repr=False)  # plain values, secrets merged for our hotspot


@dataclass(frozen=True)
class Active:
    path: str
    conn_path: str
    id: str
    uuid: str
    state: int
    devices: tuple[str, ...]
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Device:
    path: str
    interface: str
    type: int
    caps: int
    active: str


class NMRefused(TransientError):
    """NetworkManager answered a call with an error (`type` is the D-Bus error name)."""

    def __init__(self, member: str, error: DBusError):
        self.type, self.text = error.type, error.text
        super().__init__(f"NetworkManager refused {member}: {error.type.rsplit('.', 1)[-1]}: {error.text}")


def load_node(kind: str) -> Node:
    folder = resources.files("conjuringd.adapters") / "nm_introspection"
    interfaces = []
    for name in KINDS[kind] + (I_PROPS,):
        interfaces += Node.parse((folder / f"{name}.xml").read_text()).interfaces
    return Node(None, interfaces=interfaces)


def _snake(member: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in member).lstrip("_")


class NMBus:
    """The system bus connection. `calls` counts every method call sent (AddMatch included)."""

    def __init__(self, address: str | None, call_timeout: float,
                 on_message: Callable[[Message], None], on_lost: Callable[[], None]):
        self._address = address
        self._timeout = call_timeout
        self._on_message = on_message
        self._on_lost = on_lost
        self._nodes = {kind: load_node(kind) for kind in KINDS}
        self._bus: MessageBus | None = None
        self._proxies: dict = {}
        self.up: bool | None = None
        self.calls = 0

    async def connect(self) -> MessageBus:
        if self._bus is not None and self._bus.connected:
            return self._bus
        if self._bus is not None:
            self._bus = None
            self._on_lost()
        self._proxies.clear()
        try:
            kind = {"bus_address": self._address} if self._address else {"bus_type": BusType.SYSTEM}
            bus = await asyncio.wait_for(MessageBus(**kind).connect(), self._timeout)
            self._count_calls(bus)
            bus.add_message_handler(self._on_message)
            reply = await asyncio.wait_for(bus.call(Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
                member="AddMatch", signature="s", body=[MATCH_NM])), self._timeout)
            if reply.message_type is MessageType.ERROR:
                raise OSError(f"AddMatch refused: {reply.body}")
        except (OSError, EOFError, asyncio.TimeoutError, DBusError, ValueError) as exc:
            self.down(f"system bus unreachable: {exc}")
            raise TransientError(f"the system bus is unreachable: {exc}") from exc
        self._bus = bus
        return bus

    def _count_calls(self, bus: MessageBus) -> None:
        send = bus.send

        def counting_send(msg: Message):
            if msg.message_type is MessageType.METHOD_CALL:
                self.calls += 1
            return send(msg)

        bus.send = counting_send

    def forget_proxies(self) -> None:
        self._proxies.clear()

    async def call(self, path: str, kind: str, iface: str, member: str, *args):
        bus = await self.connect()
        key = (path, kind)
        if key not in self._proxies:
            self._proxies[key] = bus.get_proxy_object(NM, path, self._nodes[kind])
        method = getattr(self._proxies[key].get_interface(iface), "call_" + _snake(member))
        try:
            return await asyncio.wait_for(method(*args), self._timeout)
        except DBusError as exc:
            if exc.type in NM_GONE:
                self.down("NetworkManager is not on the bus")
                raise TransientError("NetworkManager is not running") from exc
            raise NMRefused(member, exc) from exc
        except asyncio.TimeoutError as exc:
            self.down(f"no answer to {member} in {self._timeout:g} s")
            raise TransientError(f"NetworkManager did not answer {member}") from exc
        except (EOFError, OSError) as exc:
            bus.disconnect()
            self.down(f"system bus connection lost: {exc}")
            raise TransientError("lost the system bus connection") from exc

    async def props(self, path: str, kind: str, iface: str) -> dict:
        values = await self.call(path, kind, I_PROPS, "GetAll", iface)
        return {name: variant.value for name, variant in values.items()}

    def down(self, why: str) -> None:
        if self.up is not False:
            log.warning("networkmanager_unavailable", reason=why)
            self.up = False

    def mark_up(self, **facts) -> None:
        if self.up is not True:
            log.info("networkmanager_available", **facts)
            self.up = True

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is None:
            return
        bus.disconnect()
        try:
            await asyncio.wait_for(bus.wait_for_disconnect(), 5)
        except Exception as exc:  # noqa: BLE001 - closing: the error has nowhere left to go but the log
            log.debug("bus_disconnect_error", error=repr(exc))
