"""Plain HTTP on port 80 of the hotspot address: every request gets a redirect to the hub's login.

A small asyncio server inside conjuringd, not a port of the hub container: it must answer while
the hub is being replaced or rebuilt (a phone joining then still gets its "sign in" page, which
the hub answers a moment later), it listens on the hotspot address only (never the uplink, never
0.0.0.0), and it has nothing behind it: it reads at most one request head (MAX_HEAD bytes, within
HEAD_TIMEOUT seconds), writes one fixed answer and closes. Nothing is proxied, no file is served,
and no header is interpreted, so it cannot become a way into anything else. At most
MAX_CONNECTIONS are served at once; more are closed at once.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Callable

import structlog

from conjuringd import captive

log = structlog.get_logger(__name__)

HEAD_TIMEOUT = 5.0  # seconds for the whole request head (slowloris gets nothing more)
WRITE_TIMEOUT = 5.0
MAX_CONNECTIONS = 64


class Redirector:
    """`await ensure(address)` listens on address:port (again on a new address); `stop()` closes."""

    def __init__(self, hub_port: Callable[[], int], port: int = 80, *, head_timeout: float = HEAD_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS):
        self._hub_port, self.port = hub_port, port
        self._head_timeout, self._max = head_timeout, max_connections
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task] = set()
        self.address: str | None = None
        self._bind_failed: str | None = None
        self.served = 0  # answers written, for tests and the log

    async def ensure(self, address: str) -> None:
        if self._server is not None and self.address == address:
            return
        await self.stop()
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, self.port))
        except OSError as err:
            sock.close()
            if self._bind_failed != address:  # said once per address; tried again on every pass
                log.error("captive_http_bind_failed", address=address, port=self.port, error=str(err))
            self._bind_failed = address
            return
        self._bind_failed = None
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=captive.MAX_HEAD, backlog=64)
        self.address = address
        log.info("captive_http_listening", address=address, port=self.port)

    async def stop(self) -> None:
        server, self._server, self.address = self._server, None, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()
        log.info("captive_http_stopped", port=self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._handlers) >= self._max:
            writer.transport.abort()
            return
        self._handlers.add(task)
        try:
            head = await self._read_head(reader)
            if head is not None:
                writer.write(self._answer(head, writer))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
                self.served += 1
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass  # a client that stalls or goes away gets nothing more
        finally:
            self._handlers.discard(task)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # unsent data to a client that does not read: drop it
            else:
                writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        """The request head, at most MAX_HEAD + 1 bytes (more means 431); None on timeout or EOF."""
        buffer = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._head_timeout
        while not captive.head_complete(buffer) and len(buffer) <= captive.MAX_HEAD:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                chunk = await asyncio.wait_for(reader.read(captive.MAX_HEAD + 1 - len(buffer)), remaining)
            except asyncio.TimeoutError:
                return None
            if not chunk:
                return buffer or None  # half a head then EOF: answer what we have (400 or the redirect)
            buffer += chunk
        return buffer

    def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> bytes:
        if len(head) > captive.MAX_HEAD and not captive.head_complete(head[: captive.MAX_HEAD]):
            return captive.error_response("431 Request Header Fields Too Large")
        local = writer.get_extra_info("sockname")[0]  # the hotspot address the client reached
        return captive.answer(head, captive.hub_login_url(local, self._hub_port()))
