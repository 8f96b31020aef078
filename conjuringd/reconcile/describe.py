"""Observed facts in the words of status.json and stick reports (pure)."""

from __future__ import annotations

from conjuringd.reconcile.model import Observed


def network_status(observed: Observed) -> dict | None:
    net = observed.network
    if net is None:
        return None
    return {"serve": net.serve, "state": net.state, "addresses": list(net.addresses), "ssid": net.ssid}


def describe_source(source: dict) -> str:
    kind = source.get("kind", "?")
    if kind == "stick":
        return f"stick {source.get('label') or '?'} (UUID {source.get('uuid') or '?'}) on {source.get('device')}"
    return f"{kind} {source.get('path', '')}".strip()
