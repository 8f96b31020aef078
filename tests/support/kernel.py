"""Run code in a Jupyter kernel over the kernels websocket, as a browser would (python3-websocket)."""

from __future__ import annotations

import json
import time
import uuid

import websocket


def execute(session, username: str, kernel_id: str, code: str, timeout: float = 60) -> str:
    """Send `code` to the kernel through the hub's proxy; return its stdout."""
    url = session.base.replace("http://", "ws://") + f"/user/{username}/api/kernels/{kernel_id}/channels"
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    ws = websocket.create_connection(url, timeout=timeout, header=[f"Cookie: {cookies}"], origin=session.base)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": username, "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                raise RuntimeError(f"kernel error: {msg['content'].get('ename')}: {msg['content'].get('evalue')}")
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
        raise TimeoutError("kernel did not finish")
    finally:
        ws.close()
