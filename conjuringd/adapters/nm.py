"""NetworkManager over D-Bus (dbus-next): the serve network, the hotspot and the build network.

Proxies are built from the introspection XML bundled in `nm_introspection/` (Node.parse).
One match rule (every signal NetworkManager sends) feeds a cache of what NetworkManager
holds: an idle `observe()` makes no D-Bus call at all; any signal, or NetworkManager
changing owner on the bus, invalidates the part of the cache it concerns.
"""

from __future__ import annotations

import asyncio

import structlog
from dbus_next import Message, MessageType

from conjuringd.adapters import nm_settings as nms
from conjuringd.adapters.nm_bus import (
    I_ACTIVE, I_CONN, I_DEVICE, I_IP4, I_NM, I_PROPS, I_SETTINGS, I_WIFI, NM, NM_PATH, OBJECT_GONE, SETTINGS_PATH,
    Active, Conn, Device, NMBus, NMRefused,
)
from conjuringd.adapters.protocols import Wake
from conjuringd.config.model import NetworkSettings
from conjuringd.config.problems import TransientError
from conjuringd.reconcile.model import NetworkObserved

log = structlog.get_logger(__name__)

WATCHED = (NM, I_PROPS, "org.freedesktop.DBus.ObjectManager")  # signal interfaces that change what we cache


class ActivationFailed(TransientError):
    """A connection did not come up; `reason` is NetworkManager's reason code in words."""

    def __init__(self, connection: str, reason: str, detail: str = ""):
        self.connection, self.reason, self.detail = connection, reason, detail
        super().__init__(f"network {connection!r} did not activate: {reason}" + (f" ({detail})" if detail else ""))


class NetworkManagerAdapter:
    """`NetworkAdapter` on NetworkManager's D-Bus API. `calls` counts method calls sent."""

    def __init__(self, bus_address: str | None = None, *, activation_timeout: float = 60.0,
                 call_timeout: float = 25.0):
        self._activation_timeout = activation_timeout
        self._nm = NMBus(bus_address, call_timeout, self._on_message, lambda: self._forget(owner_changed=True))
        self._wake: Wake | None = None
        self._gen = {"settings": 0, "state": 0, "owner": 0}
        self._cache: dict = {}  # "settings" / "state" -> (generation, value)
        self._refresh_lock = asyncio.Lock()
        self._ac_states: dict[str, tuple[int, int]] = {}  # active path -> (state, reason), from signals
        self._device_failures: dict[str, int] = {}  # device path -> last failure reason, from signals
        self._active_ids: dict[str, str] = {}
        self._tick = asyncio.Event()
        self._serve = ""

    @property
    def calls(self) -> int:
        """D-Bus method calls sent so far (for the benchmark and the idle-observe tests)."""
        return self._nm.calls

    # --- the protocol ------------------------------------------------------------

    async def start(self, wake: Wake) -> None:
        self._wake = wake
        try:
            await self._world()
        except TransientError:
            pass  # already logged once; observe() raises it again for the reconciler's back-off

    async def close(self) -> None:
        await self._nm.close()

    async def observe(self, spec: NetworkSettings) -> NetworkObserved:
        self._serve = spec.serve
        if spec.serve == "none":
            return NetworkObserved(serve="none", state="unmanaged")
        conns, actives, devices = await self._world()
        conn = self._serve_conn(conns, spec)
        if spec.hotspot.ssid and nms.hotspot_problems(spec.hotspot):
            return NetworkObserved(spec.serve, "absent")  # activate_serve() raises the ConfigError
        if conn is None:
            creatable = bool(spec.hotspot.ssid) and self._ap_device(devices, spec, "") is not None
            return NetworkObserved(spec.serve, "inactive" if creatable else "absent")
        ssid = nms.ssid_text(conn.settings.get("802-11-wireless", {}).get("ssid"))
        if spec.hotspot.ssid and nms.settings_differ(self._wanted_hotspot(spec, conn.interface), conn.settings):
            return NetworkObserved(spec.serve, "outdated", ssid=ssid)
        active = self._active_of(actives, conn)
        if active is None:
            return NetworkObserved(spec.serve, "inactive", ssid=ssid)
        state = {nms.AC_ACTIVATED: "activated", nms.AC_ACTIVATING: "activating"}.get(active.state, "inactive")
        addresses = active.addresses if state == "activated" else ()
        return NetworkObserved(spec.serve, state, addresses=addresses, ssid=ssid)

    async def activate_serve(self, spec: NetworkSettings) -> None:
        self._serve = spec.serve
        if spec.serve == "none":
            return
        conns, actives, devices = await self._world()
        conn = self._serve_conn(conns, spec)
        device = "/"
        if spec.hotspot.ssid:
            path, device, changed = await self._ensure_hotspot(conns, devices, spec, conn)
            conns, actives, _ = await self._world()
            conn = next((c for c in conns if c.path == path), None)
            if conn is None:
                raise TransientError(f"hotspot {spec.serve!r} vanished right after it was saved")
        elif conn is None:
            raise ActivationFailed(spec.serve, "no such connection",
                                   "NetworkManager has no connection with this id, and [network.hotspot] has no SSID")
        else:
            changed = False
        active = self._active_of(actives, conn)
        if active is not None and not changed and active.state == nms.AC_ACTIVATED:
            return
        if active is not None and not changed and active.state == nms.AC_ACTIVATING:
            await self._follow(active.path, spec.serve, device)  # already on its way: do not restart it
            return
        await self._activate(conn.path, device, spec.serve)

    def build_network(self, spec: NetworkSettings) -> "BuildNetwork":
        return BuildNetwork(self, spec)

    async def serve_settings(self, spec: NetworkSettings) -> dict | None:
        """The serve connection's settings (plain values), or the hotspot's about to be created."""
        conn = self._serve_conn((await self._world())[0], spec) if spec.serve != "none" else None
        if conn is None and spec.hotspot.ssid and not nms.hotspot_problems(spec.hotspot):
            return nms.plain(self._wanted_hotspot(spec, ""))
        return conn.settings if conn is not None else None

    # --- decisions ---------------------------------------------------------------

    @staticmethod
    def _serve_conn(conns: tuple[Conn, ...], spec: NetworkSettings) -> Conn | None:
        if spec.hotspot.ssid:
            uuid = nms.hotspot_uuid(spec.serve)
            return next((c for c in conns if c.uuid == uuid), None)
        return next((c for c in conns if c.id == spec.serve), None)

    @staticmethod
    def _active_of(actives: tuple[Active, ...], conn: Conn) -> Active | None:
        found = [a for a in actives if a.conn_path == conn.path or a.uuid == conn.uuid]
        return min(found, key=lambda a: abs(a.state - nms.AC_ACTIVATED), default=None)

    @staticmethod
    def _ap_device(devices: tuple[Device, ...], spec: NetworkSettings, prefer: str) -> Device | None:
        """A Wi-Fi device that can be an access point in the wanted band (never ethernet)."""
        fitting = []
        for dev in devices:
            if dev.type != nms.DEVICE_TYPE_WIFI or not dev.caps & nms.WIFI_CAP_AP:
                continue
            if spec.hotspot.band == "a" and dev.caps & nms.WIFI_CAP_FREQ_VALID and not dev.caps & nms.WIFI_CAP_FREQ_5GHZ:
                continue
            fitting.append(dev)
        fitting.sort(key=lambda d: (d.interface != prefer, d.interface))
        return fitting[0] if fitting else None

    def _wanted_hotspot(self, spec: NetworkSettings, interface: str) -> dict:
        return nms.hotspot_settings(spec.hotspot, nms.hotspot_uuid(spec.serve), spec.serve, interface or None)

    async def _ensure_hotspot(self, conns, devices, spec: NetworkSettings, conn: Conn | None):
        """Create or update our hotspot; returns (connection path, device path, changed)."""
        dev = self._ap_device(devices, spec, conn.interface if conn else "")
        if dev is None:
            raise ActivationFailed(spec.serve, "no suitable device", "no Wi-Fi device supports access point mode")
        wanted = self._wanted_hotspot(spec, dev.interface)
        if conn is None:
            path = await self._nm.call(SETTINGS_PATH, "settings", I_SETTINGS, "AddConnection", wanted)
            self._gen["settings"] += 1  # our own write: never trust the cache across it
            log.info("hotspot_created", connection=spec.serve, uuid=nms.hotspot_uuid(spec.serve),
                     ssid=spec.hotspot.ssid, interface=dev.interface)
            return path, dev.path, True
        differ = nms.settings_differ(wanted, conn.settings)
        if differ:
            await self._nm.call(conn.path, "conn", I_CONN, "Update", wanted)
            self._gen["settings"] += 1
            log.info("hotspot_updated", connection=spec.serve, changed=list(differ), interface=dev.interface)
        return conn.path, dev.path, bool(differ)

    # --- activation ----------------------------------------------------------------

    async def _activate(self, conn_path: str, device: str, name: str) -> None:
        started = asyncio.get_running_loop().time()
        try:
            ac = await self._nm.call(NM_PATH, "nm", I_NM, "ActivateConnection", conn_path, device, "/")
        except NMRefused as exc:
            raise ActivationFailed(name, nms.dbus_error_words(exc.type), exc.text) from exc
        finally:
            self._gen["state"] += 1
        await self._follow(ac, name, device)
        log.info("network_activated", connection=name,
                 ms=round((asyncio.get_running_loop().time() - started) * 1000, 1))

    async def _follow(self, ac: str, name: str, device: str) -> None:
        """Wait, by signal, until active connection `ac` is ACTIVATED (or fails, or times out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._activation_timeout
        owner = self._gen["owner"]
        fetched: tuple[int, int] | None = None
        try:
            while True:
                tick = self._tick
                if self._gen["owner"] != owner:
                    raise TransientError(f"NetworkManager restarted while {name!r} was activating")
                current = self._ac_states.get(ac) or fetched
                if current is None:
                    fetched = (await self._get_state(ac), 0)
                    continue
                state, reason = current
                if state == nms.AC_ACTIVATED:
                    self._active_ids[ac] = name  # so a later deactivation behind our back wakes the reconciler
                    return
                if state == nms.AC_DEACTIVATED:
                    raise ActivationFailed(name, nms.active_reason_words(reason), self._device_detail(device))
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ActivationFailed(name, "timed out", f"still {nms.ACTIVE_STATE_WORDS.get(state, state)} "
                                           f"after {self._activation_timeout:g} s")
                try:
                    await asyncio.wait_for(tick.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
                if ac not in self._ac_states:
                    fetched = None  # something changed but no StateChanged yet: look again
        finally:
            self._ac_states.pop(ac, None)

    async def _get_state(self, ac: str) -> int:
        try:
            return (await self._nm.props(ac, "active", I_ACTIVE)).get("State", nms.AC_UNKNOWN)
        except NMRefused as exc:
            if exc.type in OBJECT_GONE:
                return nms.AC_DEACTIVATED  # gone before we could look: it did not come up
            raise

    def _device_detail(self, device: str) -> str:
        reason = self._device_failures.get(device)
        return f"device: {nms.device_reason_words(reason)}" if reason is not None else ""

    async def deactivate(self, conn_id: str) -> None:
        """Take every active instance of connection `conn_id` down (used around builds and by tests)."""
        _, actives, _ = await self._world()
        for active in actives:
            if active.id == conn_id:
                await self._nm.call(NM_PATH, "nm", I_NM, "DeactivateConnection", active.path)
                self._gen["state"] += 1

    # --- the cache of NetworkManager's world ---------------------------------------

    async def _world(self) -> tuple[tuple[Conn, ...], tuple[Active, ...], tuple[Device, ...]]:
        async with self._refresh_lock:
            await self._nm.connect()
            conns = await self._cached("settings", self._read_connections)
            actives, devices = await self._cached("state", self._read_runtime)
        self._active_ids = {a.path: a.id for a in actives}
        self._nm.mark_up(connections=len(conns), devices=len(devices))
        return conns, actives, devices

    async def _cached(self, part: str, read):
        hit = self._cache.get(part)
        if hit is not None and hit[0] == (self._gen[part], self._gen["owner"]):
            return hit[1]
        gen = (self._gen[part], self._gen["owner"])
        value = await read()
        self._cache[part] = (gen, value)
        return value

    async def _read_connections(self) -> tuple[Conn, ...]:
        conns = []
        for path in await self._nm.call(SETTINGS_PATH, "settings", I_SETTINGS, "ListConnections"):
            try:
                settings = nms.plain(await self._nm.call(path, "conn", I_CONN, "GetSettings"))
                conn = settings.get("connection", {})
                if conn.get("uuid") == nms.hotspot_uuid(conn.get("id", "")):
                    secrets = nms.plain(await self._nm.call(path, "conn", I_CONN, "GetSecrets", "802-11-wireless-security"))
                    settings.setdefault("802-11-wireless-security", {}).update(secrets.get("802-11-wireless-security", {}))
            except NMRefused as exc:
                if exc.type in OBJECT_GONE:
                    continue  # removed while we listed: its signal re-reads the list
                raise
            conns.append(Conn(path, conn.get("id", ""), conn.get("uuid", ""), conn.get("type", ""),
                              conn.get("interface-name", ""), settings))
        return tuple(conns)

    async def _read_runtime(self) -> tuple[tuple[Active, ...], tuple[Device, ...]]:
        manager = await self._nm.props(NM_PATH, "nm", I_NM)
        actives, devices = [], []
        try:
            for path in manager.get("ActiveConnections", []):
                props = await self._nm.props(path, "active", I_ACTIVE)
                ip4 = props.get("Ip4Config", "/")
                data = (await self._nm.props(ip4, "ip4", I_IP4)).get("AddressData", []) if ip4 != "/" else []
                actives.append(Active(path, props.get("Connection", "/"), props.get("Id", ""), props.get("Uuid", ""),
                                      props.get("State", 0), tuple(props.get("Devices", ())),
                                      tuple(d["address"].value for d in data if "address" in d)))
            for path in manager.get("Devices", []):
                props = await self._nm.props(path, "device", I_DEVICE)
                caps = 0
                if props.get("DeviceType") == nms.DEVICE_TYPE_WIFI:
                    caps = (await self._nm.props(path, "device", I_WIFI)).get("WirelessCapabilities", 0)
                devices.append(Device(path, props.get("Interface", ""), props.get("DeviceType", 0), caps,
                                      props.get("ActiveConnection", "/")))
        except NMRefused as exc:
            if exc.type not in OBJECT_GONE:
                raise
            self._gen["state"] += 1  # something vanished mid-read: read again next time
        return tuple(actives), tuple(devices)

    # --- bookkeeping -----------------------------------------------------------------

    def _forget(self, owner_changed: bool) -> None:
        if owner_changed:
            self._gen["owner"] += 1
        self._nm.forget_proxies()
        self._cache.clear()
        self._ac_states.clear()
        self._device_failures.clear()
        self._notify()

    def _notify(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # --- signals ---------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        if msg.interface == "org.freedesktop.DBus" and msg.member == "NameOwnerChanged":
            if msg.body and msg.body[0] == NM:
                self._owner_changed(msg.body[2])
            return
        if msg.sender == "org.freedesktop.DBus" or not (msg.interface or "").startswith(WATCHED):
            return
        self._gen["settings" if msg.path.startswith(SETTINGS_PATH) else "state"] += 1
        if msg.interface == I_ACTIVE and msg.member == "StateChanged" and msg.signature == "uu":
            state, reason = msg.body
            self._ac_states[msg.path] = (state, reason)
            self._active_changed(msg.path, state, reason)
        elif msg.interface == I_DEVICE and msg.member == "StateChanged" and msg.signature == "uuu" \
                and msg.body[0] == nms.DEVICE_FAILED:
            self._device_failures[msg.path] = msg.body[2]
        elif msg.interface == I_SETTINGS and msg.member in ("NewConnection", "ConnectionRemoved"):
            self._wake_up(f"network: connection {'added' if msg.member == 'NewConnection' else 'removed'}")
        if len(self._ac_states) > 256:
            self._ac_states = {p: s for p, s in self._ac_states.items() if s[0] != nms.AC_DEACTIVATED}
        self._notify()

    def _active_changed(self, path: str, state: int, reason: int) -> None:
        name = self._active_ids.get(path, "")
        if state == nms.AC_DEACTIVATED and name and name == self._serve:
            log.info("serve_network_deactivated", connection=name, reason=nms.active_reason_words(reason))
            self._wake_up(f"network: serve connection {name!r} deactivated ({nms.active_reason_words(reason)})")

    def _owner_changed(self, new_owner: str) -> None:
        self._forget(owner_changed=True)
        if new_owner:
            log.info("networkmanager_appeared")
            self._wake_up("network: NetworkManager started")
        else:
            self._nm.down("NetworkManager left the bus")
            self._wake_up("network: NetworkManager stopped")

    def _wake_up(self, reason: str) -> None:
        if self._wake is not None:
            self._wake(reason)


class BuildNetwork:
    """`async with adapter.build_network(spec):` the build network is up inside; serve again after."""

    def __init__(self, adapter: NetworkManagerAdapter, spec: NetworkSettings):
        self._adapter, self._spec, self._switched = adapter, spec, False

    async def __aenter__(self) -> None:
        spec, adapter = self._spec, self._adapter
        if not spec.build or spec.build == spec.serve:
            return
        conns, actives, _ = await adapter._world()
        conn = next((c for c in conns if c.id == spec.build), None)
        if conn is None:
            raise ActivationFailed(spec.build, "no such connection", "the build network does not exist")
        active = adapter._active_of(actives, conn)
        if active is not None and active.state == nms.AC_ACTIVATED:
            log.info("build_network_already_up", connection=spec.build)
            return
        self._switched = True
        try:
            await adapter._activate(conn.path, "/", spec.build)
        except BaseException:
            await self._restore()
            raise
        serve = await adapter.observe(spec) if spec.serve != "none" else None
        log.info("build_network_up", connection=spec.build, serve_state=serve.state if serve else "unmanaged")

    async def __aexit__(self, *exc: object) -> bool:
        if self._switched:
            await self._restore()
        return False

    async def _restore(self) -> None:
        if self._spec.serve == "none":
            return
        try:
            await asyncio.shield(self._adapter.activate_serve(self._spec))
            log.info("serve_network_restored", connection=self._spec.serve)
        except Exception as err:  # noqa: BLE001 - the next reconcile pass retries; never mask the build's outcome
            log.error("serve_network_not_restored", connection=self._spec.serve, error=str(err))
