"""QR codes for the class sheet: the Wi-Fi join string and inline SVG (Debian's python3-segno).

`wifi_payload` is the de-facto standard phones read (`WIFI:T:WPA;S:<name>;P:<passphrase>;;`),
in which `\\`, `;`, `,`, `:` and `"` inside a value are escaped with a backslash.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(r'([\\;,:"])')


def wifi_escape(value: str) -> str:
    """`value` with each of \\ ; , : " preceded by a backslash."""
    return _SPECIAL.sub(r"\\\1", value)


def wifi_payload(ssid: str, passphrase: str) -> str:
    """What a phone's camera needs to join a WPA/WPA2 network (an open one without a passphrase)."""
    if not passphrase:
        return f"WIFI:T:nopass;S:{wifi_escape(ssid)};;"
    return f"WIFI:T:WPA;S:{wifi_escape(ssid)};P:{wifi_escape(passphrase)};;"


def qr_svg(text: str, label: str) -> str:
    """An inline <svg> of `text` as a QR code (error correction M, the standard 4-module quiet zone),
    sized by CSS (viewBox only); `label` becomes its accessible title."""
    import segno  # here, not at import: conjuringctl's other commands never need it

    code = segno.make_qr(text, error="m", boost_error=False)
    return code.svg_inline(scale=1, border=4, omitsize=True, svgclass="qr", lineclass=None, title=label)


__all__ = ["qr_svg", "wifi_escape", "wifi_payload"]
