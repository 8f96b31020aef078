"""avahi-daemon over D-Bus (dbus-next): publishes `<name>.local` and the hub's `_http._tcp` service.

One system bus connection of its own, plain method calls (six of them; no introspection),
two match rules: every signal avahi sends (server and entry-group StateChanged) and avahi
coming or going on the bus. Signals only update what `observe()` returns and wake the
reconciler; `observe()` makes no D-Bus call while connected. Avahi being absent, or the bus
being unreachable, is an observed state (logged once), never an exception: the hub keeps
serving on its IP address whatever happens here.
"""

from __future__ import annotations

import asyncio
import os

import structlog
from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus
from dbus_next.errors import DBusError

from conjuringd.adapters import avahi_records as ar
from conjuringd.adapters.protocols import Wake
from conjuringd.reconcile.model import NameRecord, NamesObserved

log = structlog.get_logger(__name__)

BUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


class AvahiGone(Exception):
    """avahi-daemon, or the bus, went away during a call."""


class AvahiPublisher:
    """`NamePublisher` on avahi-daemon. `bus_address` None = the system bus (DBUS_SYSTEM_BUS_ADDRESS)."""

    def __init__(self, bus_address: str | None = None, *, call_timeout: float = 10.0, verdict_timeout: float = 10.0):
        self._address = bus_address
        self._timeout = call_timeout
        self._verdict_timeout = verdict_timeout  # how long publish() waits for probing to end (about 1 s)
        self._verdict = asyncio.Event()
        self._bus: MessageBus | None = None
        self._wake: Wake | None = None
        self._avahi = "no bus"  # see NamesObserved.avahi
        self._detail = ""
        self._said = ""  # the availability last logged, so each change is logged once
        self._group_path = ""
        self._record: NameRecord | None = None
        self._group = ""
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    # --- the protocol ----------------------------------------------------------------

    async def start(self, wake: Wake) -> None:
        self._wake = wake
        await self._connect()

    async def observe(self, addresses: tuple[str, ...]) -> NamesObserved:
        if self._bus is None or not self._bus.connected:
            await self._connect()
        return NamesObserved(self._avahi, self._record, self._group if self._record else "", self._detail, addresses)

    async def publish(self, record: NameRecord) -> None:
        """Replace whatever our entry group holds by `record` and commit it. Failures become observed
        state (group "failure" or "collision"); avahi leaving mid-way becomes "absent"."""
        async with self._lock:
            try:
                await self._publish(record)
                await self._await_verdict()
            except AvahiGone as gone:
                self._lost(str(gone))
            except DBusError as refused:
                self._record, self._detail = record, f"{refused.type.rsplit('.', 1)[-1]}: {refused.text}"
                self._group = "collision" if refused.type == ar.COLLISION else "failure"
                log.warning("mdns_publish_refused", name=record.fqdn, error=self._detail, state=self._group)

    async def withdraw(self) -> None:
        async with self._lock:
            record, self._record, self._group = self._record, None, ""
            if not self._group_path:
                return
            try:
                await self._call(self._group_path, ar.I_GROUP, "Reset")
                log.info("mdns_withdrawn", name=record.fqdn if record else "")
            except AvahiGone as gone:
                self._lost(str(gone))
            except DBusError as refused:
                log.warning("mdns_withdraw_refused", error=refused.text)
                self._group_path = ""

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is None:
            return
        if self._group_path and self._record is not None:
            try:
                await asyncio.wait_for(bus.call(Message(destination=ar.AVAHI, path=self._group_path,
                                                        interface=ar.I_GROUP, member="Free")), self._timeout)
                log.info("mdns_withdrawn", name=self._record.fqdn)
            except (OSError, EOFError, asyncio.TimeoutError, DBusError) as exc:
                log.debug("mdns_free_failed", error=repr(exc))  # avahi frees a client's groups when it leaves
        bus.disconnect()
        try:
            await asyncio.wait_for(bus.wait_for_disconnect(), 5)
        except (OSError, EOFError, asyncio.TimeoutError) as exc:
            log.debug("bus_disconnect_error", error=repr(exc))

    # --- publishing ----------------------------------------------------------------------

    async def _publish(self, record: NameRecord) -> None:
        if self._group_path:
            try:
                await self._call(self._group_path, ar.I_GROUP, "Reset")
            except DBusError:
                self._group_path = ""  # gone (avahi restarted under us): make a new one
        if not self._group_path:
            self._group_path = (await self._call(ar.SERVER_PATH, ar.I_SERVER, "EntryGroupNew"))[0]
        self._record, self._group, self._detail = record, "registering", ""
        self._verdict = asyncio.Event()
        for member, signature, body in ar.entry_calls(record):
            await self._call(self._group_path, ar.I_GROUP, member, signature, body)
        await self._call(self._group_path, ar.I_GROUP, "Commit")
        log.info("mdns_publishing", name=record.fqdn, addresses=list(record.addresses), port=record.port)

    async def _await_verdict(self) -> None:
        """Wait, by signal, until probing ends (established, collision, failure), so that the reconciler
        reacts to a collision before it starts anything long; avahi busy for longer is observed later."""
        verdict = self._verdict
        try:
            await asyncio.wait_for(verdict.wait(), self._verdict_timeout)
        except asyncio.TimeoutError:
            log.info("mdns_still_registering", name=self._record.fqdn if self._record else "",
                     seconds=self._verdict_timeout)

    async def _call(self, path: str, interface: str, member: str, signature: str = "", body=None) -> list:
        bus = self._bus
        if bus is None or not bus.connected:
            raise AvahiGone("not connected to the system bus")
        message = Message(destination=ar.AVAHI, path=path, interface=interface, member=member,
                          signature=signature, body=body or [])
        try:
            reply = await asyncio.wait_for(bus.call(message), self._timeout)
        except (OSError, EOFError) as exc:
            raise AvahiGone(f"system bus connection lost: {exc}") from exc
        except asyncio.TimeoutError as exc:
            raise AvahiGone(f"avahi-daemon did not answer {member} in {self._timeout:g} s") from exc
        if reply.message_type is MessageType.ERROR:
            if reply.error_name in ar.GONE:
                raise AvahiGone("avahi-daemon left the bus")
            raise DBusError(reply.error_name, reply.body[0] if reply.body else "")
        return reply.body

    # --- the connection ------------------------------------------------------------------

    async def _connect(self) -> None:
        """Connect, subscribe, then look once: avahi's presence and its server state."""
        self._bus, self._group_path, self._record, self._group = None, "", None, ""  # groups die with a connection
        try:
            kind = {"bus_address": self._address} if self._address else {"bus_type": BusType.SYSTEM}
            bus = await asyncio.wait_for(MessageBus(**kind).connect(), self._timeout)
            bus.add_message_handler(self._on_message)
            for rule in (ar.MATCH_AVAHI, ar.MATCH_OWNER):
                await self._bus_call(bus, "AddMatch", "s", [rule])
            owned = (await self._bus_call(bus, "NameHasOwner", "s", [ar.AVAHI]))[0]
        except (OSError, EOFError, asyncio.TimeoutError, DBusError, ValueError) as exc:
            where = self._address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or "the system bus"
            self._set("no bus", f"{where}: {exc or type(exc).__name__}")
            return
        self._bus = bus
        if owned:
            await self._avahi_appeared()
        else:
            self._set("absent")

    async def _bus_call(self, bus: MessageBus, member: str, signature: str, body: list) -> list:
        destination, path, interface = BUS
        reply = await asyncio.wait_for(bus.call(Message(destination=destination, path=path, interface=interface,
                                                        member=member, signature=signature, body=body)),
                                       self._timeout)
        if reply.message_type is MessageType.ERROR:
            raise DBusError(reply.error_name, reply.body[0] if reply.body else "")
        return reply.body

    async def _avahi_appeared(self) -> None:
        try:
            state = (await self._call(ar.SERVER_PATH, ar.I_SERVER, "GetState"))[0]
            version = (await self._call(ar.SERVER_PATH, ar.I_SERVER, "GetVersionString"))[0]
        except (AvahiGone, DBusError) as exc:
            self._set("absent", str(exc))
            return
        self._server_state(state, version=version)

    def _set(self, avahi: str, detail: str = "", **facts) -> None:
        """Record avahi's availability; each change is logged once (the reconciler warns, with the hub's URL)."""
        self._avahi, self._detail = avahi, detail
        if self._said != avahi:
            self._said = avahi
            log.info("mdns_avahi", state=avahi, detail=detail or None, **facts)

    def _lost(self, why: str) -> None:
        self._group_path, self._record, self._group = "", None, ""
        self._verdict.set()
        if self._bus is not None and not self._bus.connected:
            self._bus = None
            self._set("no bus", why)
        else:
            self._set("absent", why)
        self._wake_up(f"mdns: {why}")

    # --- signals -----------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.body and msg.body[0] == ar.AVAHI:
            if msg.body[2]:
                task = asyncio.get_running_loop().create_task(self._appeared_task())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._lost("avahi-daemon left the bus")
            return
        if msg.member != "StateChanged" or not msg.body:
            return
        if msg.interface == ar.I_SERVER:
            self._server_state(msg.body[0])
        elif msg.interface == ar.I_GROUP and msg.path == self._group_path and self._record is not None:
            self._group_changed(ar.group_state(msg.body[0]), msg.body[1] if len(msg.body) > 1 else "")

    async def _appeared_task(self) -> None:
        self._group_path, self._record, self._group = "", None, ""
        await self._avahi_appeared()

    def _server_state(self, code: int, **facts) -> None:
        running = code == ar.SERVER_RUNNING
        if not running and self._record is not None:
            self._record, self._group = None, ""  # avahi re-registers its own host name: publish again after
            self._verdict.set()
        self._set("running" if running else "starting", "", server=ar.server_state(code), **facts)
        self._wake_up(f"mdns: avahi {ar.server_state(code)}")

    def _group_changed(self, state: str, error: str) -> None:
        if state == self._group:
            return
        self._group = state
        self._detail = error if state in ("collision", "failure") else ""
        if state not in ("registering", "uncommitted"):
            self._verdict.set()
        event = {"established": log.info, "registering": log.debug}.get(state, log.warning)
        event("mdns_" + state, name=self._record.fqdn, error=self._detail or None)
        self._wake_up(f"mdns: {self._record.fqdn} {state}")

    def _wake_up(self, reason: str) -> None:
        if self._wake is not None:
            self._wake(reason)
