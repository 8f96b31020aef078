"""The daemon's control socket: conjuringctl asks, the reconciler does.

One JSON request per connection, one JSON answer. The socket is root-only
(0600): applying a configuration is an administrator's act.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

APPLY_TIMEOUT = 900.0


class ControlServer:
    def __init__(self, socket_path: Path, reconciler: Any, enrolment: Any = None):
        self.socket_path = socket_path
        self.reconciler = reconciler
        self.enrolment = enrolment  # conjuringd.sticks.enrol.Enrolment: enroll, sticks, revoke
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path))
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.socket_path.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            answer = await self._answer(request)
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"ok": False, "error": f"bad request: {exc}"}
        writer.write(json.dumps(answer).encode() + b"\n")
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the client gave up waiting; nothing to tell it
        writer.close()

    async def _answer(self, request: dict) -> dict:
        command = request["command"]
        log.info("control_request", command=command)
        if command == "apply":
            folder = Path(request["path"])
            replace = bool(request.get("complete"))  # conjuringctl apply --complete
            done = self.reconciler.request_apply(folder, {"kind": "conjuringctl", "path": str(folder)}, merge=not replace)
            outcome = await asyncio.wait_for(done, APPLY_TIMEOUT)
            return {"ok": outcome.result in ("applied", "unchanged"), "result": outcome.result,
                    "config": outcome.config_hash, "problems": [str(p) for p in outcome.problems],
                    "message": outcome.message, "merge": outcome.merge.counts() if outcome.merge else None}
        if command == "rebuild":
            self.reconciler.store.state.clear_failed_builds()
            self.reconciler.wake("ctl: rebuild")
            return {"ok": True}
        if command == "switch":  # a waiting new hub takes over now (kept in state: a restart does not lose it)
            self.reconciler.store.state.update(switch_requested=True)
            self.reconciler.wake("ctl: switch")
            return {"ok": True}
        if command == "wake":
            self.reconciler.wake("ctl: wake")
            return {"ok": True}
        if command in ("enroll", "sticks", "revoke"):
            return await self._sticks(command, request)
        if command == "debug-hang" and os.environ.get("CONJURINGD_DEBUG") == "1":
            self.reconciler.request_hang()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {command!r}"}

    async def _sticks(self, command: str, request: dict) -> dict:
        from dataclasses import asdict

        from conjuringd.sticks.enrol import EnrolError

        loop = asyncio.get_running_loop()
        try:
            if command == "sticks":
                sticks = await loop.run_in_executor(None, self.enrolment.sticks)
                return {"ok": True, "sticks": [asdict(s) for s in sticks if s.id != "-"]}
            if command == "revoke":
                revoked = await loop.run_in_executor(None, self.enrolment.revoke, str(request["id"]))
                return {"ok": True, "stick": asdict(revoked)}
            sticks = self.reconciler.adapters.sticks
            if sticks is None or not hasattr(sticks, "enroll"):
                return {"ok": False, "error": "this daemon does not watch USB sticks (started with --usb none)"}
            return await sticks.enroll(request.get("device") or None)
        except EnrolError as exc:
            return {"ok": False, "error": str(exc)}
        except OSError as exc:
            return {"ok": False, "error": f"could not {command}: {exc.strerror or exc}"}
