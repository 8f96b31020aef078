"""The captive portal around the NetworkManager adapter (a `NetworkAdapter` itself).

When the serve connection is in shared mode (the box's own hotspot, or an ethernet profile with
ipv4.method=shared) and `[network] captive_portal` is on (a machine-only key, default on):

- before NetworkManager activates it, the dnsmasq drop-in says "every name is <its address>";
  dnsmasq reads the folder only when it starts, so a drop-in that changes while the connection is
  up makes observe() report it "outdated" and activate_serve() restarts the connection once;
- while it is up, port 80 on its address answers every request with a redirect to the hub's login.

Everything else (the build network, connections that are not shared, serve = "none") passes
straight through to the NetworkManager adapter; there the drop-in is removed and port 80 closed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import structlog

from conjuringd import captive
from conjuringd.adapters.captive_dns import DropIn
from conjuringd.adapters.captive_http import Redirector
from conjuringd.adapters.protocols import Wake
from conjuringd.config.model import NetworkSettings
from conjuringd.reconcile.model import NetworkObserved

log = structlog.get_logger(__name__)


class CaptiveNetwork:
    def __init__(self, inner, hub_port: Callable[[], int], *, dropin: DropIn | None = None, http_port: int = 80):
        self.inner = inner  # NetworkManagerAdapter (anything with serve_settings() and deactivate())
        self.dropin = dropin if dropin is not None else DropIn()
        self.http = Redirector(hub_port, http_port)

    @property
    def calls(self) -> int:
        return self.inner.calls

    async def start(self, wake: Wake) -> None:
        await self.inner.start(wake)

    async def close(self) -> None:
        # The drop-in stays: the hotspot (and its dnsmasq) outlives the daemon, and it comes back.
        await self.http.stop()
        await self.inner.close()

    def build_network(self, spec: NetworkSettings):
        return self.inner.build_network(spec)

    async def deactivate(self, conn_id: str) -> None:
        await self.inner.deactivate(conn_id)

    async def _portal(self, spec: NetworkSettings, observed: NetworkObserved) -> tuple[bool, str | None]:
        """(serve connection is shared, address the portal should use or None when it is off)."""
        if spec.serve == "none":
            return False, None
        predicted = captive.shared_address(await self.inner.serve_settings(spec))
        if predicted is None:
            return False, None
        if not spec.captive_portal:
            return True, None
        live = captive.ipv4_of(observed.addresses) if observed.state == "activated" else ()
        return True, predicted if not live or predicted in live else live[0]

    async def observe(self, spec: NetworkSettings) -> NetworkObserved:
        observed = await self.inner.observe(spec)
        shared, address = await self._portal(spec, observed)
        if observed.state != "activated":
            return observed
        await self._http(address)
        if self.dropin.wanted_differs(address):
            if shared:
                log.info("captive_portal_needs_restart", connection=spec.serve, address=address,
                         why="dnsmasq reads its drop-ins only when NetworkManager starts it")
                return replace(observed, state="outdated")
            self.dropin.remove()  # not shared: no dnsmasq of ours reads it; just tidy up
        return observed

    async def activate_serve(self, spec: NetworkSettings) -> None:
        before = await self.inner.observe(spec)
        shared, address = await self._portal(spec, before)
        stale = before.state == "activated" and shared and self.dropin.wanted_differs(address)
        self._apply(address)
        if stale:
            log.info("captive_portal_restarting_serve", connection=spec.serve, address=address)
            await self.inner.deactivate(spec.serve)
        await self.inner.activate_serve(spec)
        after = await self.inner.observe(spec)
        shared, actual = await self._portal(spec, after)
        if shared and after.state == "activated" and self.dropin.wanted_differs(actual):
            # NetworkManager chose another address than predicted (10.42.x.1 taken): once more with it
            log.info("captive_portal_address_moved", connection=spec.serve, predicted=address, actual=actual)
            self._apply(actual)
            await self.inner.deactivate(spec.serve)
            await self.inner.activate_serve(spec)
            after = await self.inner.observe(spec)
        await self._http(actual if after.state == "activated" else None)

    def _apply(self, address: str | None) -> None:
        if address:
            self.dropin.write(address)
        else:
            self.dropin.remove()

    async def _http(self, address: str | None) -> None:
        if address:
            await self.http.ensure(address)
        else:
            await self.http.stop()
