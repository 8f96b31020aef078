"""The captive portal of the box's own hotspot, pure parts: the dnsmasq drop-in and the HTTP answer.

On a connection with `ipv4.method=shared` NetworkManager starts a dnsmasq of its own for DHCP
and DNS, and that dnsmasq reads every file in /etc/NetworkManager/dnsmasq-shared.d/ when it
starts. conjuringd writes one file there, `address=/#/<hotspot address>`: every name a client
asks for (conjuring.local, anything.test, connectivitycheck.gstatic.com) then resolves to the
box, and plain HTTP on port 80 answers every request with a redirect to the hub's login page.
A phone or laptop that probes for internet access after joining (Android's /generate_204,
Apple's /hotspot-detect.html, Windows' /connecttest.txt and /ncsi.txt) gets that redirect
instead of the answer it expects, so it shows its "sign in to network" page: the hub's login.

Nothing here does I/O: conjuringd.adapters.captive_dns writes the file, captive_http serves.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DROPIN_DIR = "/etc/NetworkManager/dnsmasq-shared.d"  # compiled into NetworkManager (NMCONFDIR)
DROPIN_NAME = "conjuringd-captive-portal.conf"
MARKER = "# conjuringd captive portal: written and removed by conjuringd; edits are overwritten."
NM_SHARED_DEFAULT = "10.42.0.1"  # what NetworkManager gives the first shared connection without ipv4.addresses

MAX_HEAD = 8192  # bytes of request line + headers read at most; more gets 431 and the connection closes
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"})
PROBE_PATHS = ("/generate_204", "/gen_204", "/hotspot-detect.html", "/library/test/success.html",
               "/connecttest.txt", "/ncsi.txt", "/redirect", "/canonical.html", "/success.txt")


def shared_address(settings: dict | None) -> str | None:
    """The IPv4 address NetworkManager gives a shared connection (its first ipv4.address-data,
    else NetworkManager's default), or None when the profile is not in shared mode."""
    ipv4 = (settings or {}).get("ipv4", {})
    if ipv4.get("method") != "shared":
        return None
    for entry in ipv4.get("address-data") or ():
        address = entry.get("address", "") if isinstance(entry, dict) else ""
        address = str(getattr(address, "value", address))  # a D-Bus Variant inside aa{sv}, or plain
        if _is_ipv4(address):
            return address
    return NM_SHARED_DEFAULT


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def ipv4_of(addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The IPv4 addresses among an active connection's addresses ("10.42.0.1" or "10.42.0.1/24")."""
    return tuple(a.split("/")[0] for a in addresses if _is_ipv4(a.split("/")[0]))


def dropin_text(address: str) -> str:
    """The drop-in: every name, in every domain, resolves to `address` (the box on its hotspot).
    dnsmasq answers them itself, so nothing is forwarded upstream and AAAA queries get no answer."""
    if not _is_ipv4(address):
        raise ValueError(f"not an IPv4 address: {address!r}")
    return (f"{MARKER}\n"
            "# Every name resolves to the box on its own hotspot, so that phones and laptops open the hub's login\n"
            "# as their \"sign in to network\" page. Turn it off on the box: [network] captive_portal = false\n"
            "# in /etc/conjuring/conjuring.toml.\n"
            f"address=/#/{address}\n")


def is_ours(text: str) -> bool:
    """Whether a file in the drop-in folder was written by conjuringd (its first line is the marker)."""
    return text.split("\n", 1)[0] == MARKER


def hub_login_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}/hub/login" if port == 80 else f"http://{host}:{port}/hub/login"


@dataclass(frozen=True)
class RequestLine:
    method: str
    target: str
    version: str


def parse_request_line(head: bytes) -> RequestLine | None:
    """The request line of an HTTP/1.x request head, or None when it is not one (garbage, HTTP/2
    preface, TLS hello, control characters). Headers are never interpreted: the answer is fixed."""
    line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.split(" ")
    if len(parts) != 3 or any(not p or not p.isprintable() for p in parts):
        return None
    method, target, version = parts
    if method not in METHODS or version not in ("HTTP/1.0", "HTTP/1.1"):
        return None
    return RequestLine(method, target, version)


def head_complete(buffer: bytes) -> bool:
    return b"\r\n\r\n" in buffer or b"\n\n" in buffer


def _response(status: str, headers: tuple[tuple[str, str], ...], body: bytes, with_body: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers),
             f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("ascii") + (body if with_body else b"")


def redirect_response(location: str, head_only: bool = False) -> bytes:
    """302 to the hub's login page, the same for every path (probe URLs included) and every Host.
    Nothing of the request is echoed back."""
    if any(c in location for c in "\r\n\"<>") or not location.isascii():
        raise ValueError(f"unsafe redirect target: {location!r}")
    body = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in</title>"
            f"<meta http-equiv=\"refresh\" content=\"0; url={location}\"></head>"
            f"<body><p><a href=\"{location}\">Sign in to the class hub</a></p></body></html>\n").encode("ascii")
    return _response("302 Found", (("Location", location), ("Content-Type", "text/html; charset=utf-8")),
                     body, not head_only)


def error_response(status: str) -> bytes:
    """A fixed plain-text error (400 for garbage, 431 for a head over MAX_HEAD)."""
    return _response(status, (("Content-Type", "text/plain; charset=utf-8"),), f"{status}\n".encode("ascii"))


def answer(head: bytes, location: str) -> bytes:
    """The whole answer to a request head (at most MAX_HEAD bytes, complete or not)."""
    request = parse_request_line(head)
    if request is None:
        return error_response("400 Bad Request")
    return redirect_response(location, head_only=request.method == "HEAD")
