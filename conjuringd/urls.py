"""Where students reach the hub: the serve network's addresses plus the hub port."""

from __future__ import annotations

import fcntl
import socket
import struct
from pathlib import Path
from urllib.parse import quote

from conjuringd.reconcile.model import NetworkObserved


_VIRTUAL_PREFIXES = ("lo", "docker", "br-", "veth", "virbr")  # not where students come from
_SIOCGIFADDR = 0x8915


def _interface_ipv4(name: str) -> str | None:
    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
        except OSError:
            return None  # no IPv4 address on it
    return socket.inet_ntoa(answer[20:24])


def local_ipv4_addresses(sys_net: Path = Path("/sys/class/net")) -> tuple[str, ...]:
    """The first IPv4 address of each physical-looking interface (not loopback, Docker or veth)."""
    try:
        names = sorted(p.name for p in sys_net.iterdir())
    except OSError:
        return ()
    found = (_interface_ipv4(name) for name in names if not name.startswith(_VIRTUAL_PREFIXES))
    return tuple(address for address in found if address)


def serve_urls(network: NetworkObserved | None, port: int) -> tuple[str, ...]:
    """http URLs of the hub on each address of the serve connection, when it is up (IPv6 bracketed)."""
    if network is None or network.state != "activated":
        return ()
    addresses = (a.split("/")[0] for a in network.addresses)
    return tuple(f"http://[{a}]:{port}" if ":" in a else f"http://{a}:{port}" for a in addresses)


def hub_urls(network: NetworkObserved | None, port: int) -> tuple[str, ...]:
    """URLs for the report and status: the serve connection's addresses when it is up,
    else every non-loopback address of the host (networking not managed, or not up yet)."""
    return serve_urls(network, port) or tuple(
        f"http://{address}:{port}" for address in local_ipv4_addresses() or ("127.0.0.1",))


def student_address(mdns_name: str | None, port: int, hub_urls: tuple[str, ...] | list[str]) -> str:
    """The one address students type (the sheet, REPORT.html, `conjuringctl status`): the box's
    published name when there is one, else the first hub URL (an IP address); "" if neither is known."""
    if mdns_name:
        return f"http://{mdns_name}" if port == 80 else f"http://{mdns_name}:{port}"
    return hub_urls[0] if hub_urls else ""


def login_url(address: str, user: str = "") -> str:
    """The hub's login page at `address`, with the name filled in when `user` is given
    (JupyterHub's login form takes ?username=)."""
    page = f"{address.rstrip('/')}/hub/login"
    return f"{page}?username={quote(user, safe='')}" if user else page
