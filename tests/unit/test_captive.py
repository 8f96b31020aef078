"""The captive portal's pure parts (drop-in text, request line, answers), the drop-in file's
ownership rules, and the port-80 redirector against hostile clients (on 127.0.0.1, a high port)."""

from __future__ import annotations

import asyncio
from dataclasses import replace as _replace

import pytest
from dbus_next import Variant

from conjuringd import captive
from conjuringd.adapters.captive import CaptiveNetwork
from conjuringd.adapters.captive_dns import DropIn
from conjuringd.adapters.captive_http import Redirector
from conjuringd.config.model import NetworkSettings
from conjuringd.reconcile.model import NetworkObserved

LOGIN = "http://10.42.0.1:8989/hub/login"


def test_shared_address_default_configured_and_not_shared():
    assert captive.shared_address({"ipv4": {"method": "shared"}}) == "10.42.0.1"
    variant = {"ipv4": {"method": "shared", "address-data": [{"address": Variant("s", "192.168.50.1"),
                                                                "prefix": Variant("u", 24)}]}}
    assert captive.shared_address(variant) == "192.168.50.1"
    assert captive.shared_address({"ipv4": {"method": "shared", "address-data": [{"address": "fe80::1"}]}}) == "10.42.0.1"
    assert captive.shared_address({"ipv4": {"method": "manual", "address-data": [{"address": "10.0.0.1"}]}}) is None
    assert captive.shared_address({"ipv4": {"method": "auto"}}) is None
    assert captive.shared_address(None) is None


def test_dropin_text_answers_every_name_and_is_marked():
    text = captive.dropin_text("10.42.0.1")
    assert text.splitlines()[0] == captive.MARKER and captive.is_ours(text)
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["address=/#/10.42.0.1"]
    assert not captive.is_ours("address=/#/10.0.0.1\n" + captive.MARKER)
    for bad in ("10.42.0.1\naddress=/#/1.2.3.4", "::1", "box.local", ""):
        with pytest.raises(ValueError):
            captive.dropin_text(bad)


def test_ipv4_of_and_login_url():
    assert captive.ipv4_of(("10.42.0.1/24", "fe80::1", "10.1.0.1")) == ("10.42.0.1", "10.1.0.1")
    assert captive.hub_login_url("10.42.0.1", 8989) == LOGIN
    assert captive.hub_login_url("10.42.0.1", 80) == "http://10.42.0.1/hub/login"


@pytest.mark.parametrize("path", captive.PROBE_PATHS + ("/", "/anything?x=1"))
def test_every_path_probe_urls_included_gets_the_redirect(path):
    reply = captive.answer(f"GET {path} HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n".encode(), LOGIN)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 302 Found\r\n")
    assert f"Location: {LOGIN}".encode() in head.split(b"\r\n")
    assert b"Connection: close" in head and LOGIN.encode() in body
    assert f"Content-Length: {len(body)}".encode() in head


def test_head_gets_no_body_and_nothing_is_echoed():
    reply = captive.answer(b"HEAD /<script> HTTP/1.0\r\nX-Evil: \"><a>\r\n\r\n", LOGIN)
    assert reply.endswith(b"\r\n\r\n") and b"302 Found" in reply
    assert b"script" not in reply and b"Evil" not in reply


@pytest.mark.parametrize("head", [
    b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n", b"GET  / HTTP/1.1\r\n\r\n", b"get / HTTP/1.1\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n", "GET /\u00e9 HTTP/1.1\r\n\r\n".encode(), b"GET / HTTP/9.9\r\n\r\n",
])
def test_garbage_gets_a_fixed_400(head):
    assert captive.answer(head, LOGIN) == captive.error_response("400 Bad Request")


def test_redirect_target_is_checked():
    for bad in ("http://x/\r\nSet-Cookie: a=b", 'http://x/"><script>', "http://\u00e9/"):
        with pytest.raises(ValueError):
            captive.redirect_response(bad)


# --- the drop-in file ----------------------------------------------------------------


def test_dropin_write_is_idempotent_updates_and_removes(tmp_path):
    dropin = DropIn(tmp_path)
    assert dropin.wanted_differs("10.42.0.1")
    assert dropin.write("10.42.0.1") and not dropin.write("10.42.0.1")
    assert "address=/#/10.42.0.1" in dropin.path.read_text()
    assert dropin.path.stat().st_mode & 0o777 == 0o644
    assert not dropin.wanted_differs("10.42.0.1") and dropin.wanted_differs("10.42.3.1")
    assert dropin.write("10.42.3.1") and "address=/#/10.42.3.1" in dropin.path.read_text()
    assert dropin.wanted_differs(None)
    assert dropin.remove() and not dropin.path.exists() and not dropin.remove()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp files left


def test_an_admins_file_of_that_name_is_never_touched(tmp_path):
    admin = tmp_path / captive.DROPIN_NAME
    admin.write_text("address=/printer.lan/10.42.0.50\n")
    dropin = DropIn(tmp_path)
    assert dropin.foreign() and not dropin.wanted_differs("10.42.0.1") and not dropin.wanted_differs(None)
    assert not dropin.write("10.42.0.1") and not dropin.remove()
    assert admin.read_text() == "address=/printer.lan/10.42.0.50\n"
    other = tmp_path / "admin.conf"
    other.write_text("dhcp-host=11:22:33:44:55:66,10.42.0.9\n")
    admin.unlink()
    assert dropin.write("10.42.0.1") and dropin.remove()
    assert other.read_text() == "dhcp-host=11:22:33:44:55:66,10.42.0.9\n"


def test_a_symlink_is_foreign_and_a_missing_folder_changes_nothing(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text(captive.dropin_text("10.42.0.1"))
    (tmp_path / captive.DROPIN_NAME).symlink_to(target)
    assert DropIn(tmp_path).foreign() and not DropIn(tmp_path).write("10.42.0.2")
    assert target.read_text() == captive.dropin_text("10.42.0.1")
    missing = DropIn(tmp_path / "no-networkmanager")
    assert not missing.wanted_differs("10.42.0.1") and not missing.write("10.42.0.1")


def test_a_failed_write_is_not_wanted_again(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("conjuringd.atomic.write_bytes", refuse)  # e.g. a read-only /etc
    dropin = DropIn(tmp_path)
    assert dropin.wanted_differs("10.42.0.1") and not dropin.write("10.42.0.1")
    assert not dropin.wanted_differs("10.42.0.1")  # no restart loop over a file that cannot be written
    assert dropin.wanted_differs("10.42.0.7")  # another address is tried


# --- the redirector ----------------------------------------------------------------------


@pytest.fixture
async def redirector():
    server = Redirector(lambda: 8989, port=0, head_timeout=0.5, max_connections=4)
    await server.ensure("127.0.0.1")
    server.port = server._server.sockets[0].getsockname()[1]
    yield server
    await server.stop()


async def exchange(port: int, data: bytes, *, close: bool = True, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if close:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def test_redirects_to_the_login_on_the_address_reached(redirector):
    reply = await exchange(redirector.port, b"GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n", close=False)
    assert reply.startswith(b"HTTP/1.1 302 Found\r\n")
    assert b"Location: http://127.0.0.1:8989/hub/login\r\n" in reply
    assert redirector.served == 1


async def test_huge_head_gets_431_and_the_rest_is_not_read(redirector):
    flood = b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 100_000
    reader, writer = await asyncio.open_connection("127.0.0.1", redirector.port)
    writer.write(flood)
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 431 ")


async def test_slowloris_is_cut_off_and_garbage_gets_400(redirector):
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", redirector.port)
    started = loop.time()
    writer.write(b"GET / HTTP/1.1\r\n")  # and never the end of the head
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert loop.time() - started < 3
    writer.close()
    assert (await exchange(redirector.port, b"\x16\x03\x01garbage")).startswith(b"HTTP/1.1 400 ")


async def test_more_connections_than_the_limit_are_closed_and_it_keeps_serving(redirector):
    idle = [await asyncio.open_connection("127.0.0.1", redirector.port) for _ in range(4)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", redirector.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        extra = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        extra = b""
    assert extra == b""  # over the limit: closed at once, unanswered
    writer.close()
    for _, w in idle:
        w.close()
    await asyncio.sleep(0.7)  # their head timeout frees the slots
    assert b"302 Found" in await exchange(redirector.port, b"GET / HTTP/1.1\r\n\r\n")


async def test_a_port_in_use_is_logged_not_raised():
    first = Redirector(lambda: 8989, port=0)
    await first.ensure("127.0.0.1")
    taken = first._server.sockets[0].getsockname()[1]
    second = Redirector(lambda: 8989, port=taken)
    await second.ensure("127.0.0.1")
    assert second.address is None
    await first.stop()
    await second.ensure("127.0.0.1")  # tried again: the port is free now
    assert second.address == "127.0.0.1"
    await second.stop()


# --- CaptiveNetwork's decisions, around a stand-in for the NetworkManager adapter -----------

class FakeNM:
    """Stand-in for NetworkManagerAdapter: one shared profile; activation gives it `given`."""

    def __init__(self, configured: str | None, given: str, method: str = "shared"):
        ipv4 = {"method": method, **({"address-data": [{"address": configured}]} if configured else {})}
        self.settings, self.given, self.up, self.log = {"ipv4": ipv4}, given, False, []
        self.calls = 0

    async def serve_settings(self, spec):
        return self.settings

    async def observe(self, spec):
        return NetworkObserved(spec.serve, "activated" if self.up else "inactive",
                               addresses=(f"{self.given}/8",) if self.up else ())

    async def activate_serve(self, spec):
        if not self.up:
            self.log.append("activate")
        self.up = True

    async def deactivate(self, conn_id):
        self.log.append("deactivate")
        self.up = False

    async def close(self):
        pass


SPEC = NetworkSettings(serve="classroom")


async def test_dropin_is_written_before_activation_and_port_80_opens_after(tmp_path):
    nm = FakeNM("127.0.0.1", "127.0.0.1")
    net = CaptiveNetwork(nm, lambda: 8989, dropin=DropIn(tmp_path), http_port=0)
    original = nm.activate_serve

    async def activate(spec):
        assert (tmp_path / captive.DROPIN_NAME).read_text() == captive.dropin_text("127.0.0.1")  # before
        await original(spec)

    nm.activate_serve = activate
    await net.activate_serve(SPEC)
    assert nm.log == ["activate"] and net.http.address == "127.0.0.1"
    assert (await net.observe(SPEC)).state == "activated"
    await net.close()


async def test_turning_it_off_while_up_restarts_the_connection_once_without_the_dropin(tmp_path):
    nm = FakeNM("127.0.0.1", "127.0.0.1")
    net = CaptiveNetwork(nm, lambda: 8989, dropin=DropIn(tmp_path), http_port=0)
    await net.activate_serve(SPEC)
    off = _replace(SPEC, captive_portal=False)
    assert (await net.observe(off)).state == "outdated"  # dnsmasq still has the old drop-in loaded
    await net.activate_serve(off)
    assert nm.log == ["activate", "deactivate", "activate"]
    assert not (tmp_path / captive.DROPIN_NAME).exists() and net.http.address is None
    assert (await net.observe(off)).state == "activated"
    await net.close()


async def test_an_address_other_than_predicted_is_written_and_activated_again(tmp_path):
    nm = FakeNM(None, "127.0.0.1")  # predicted 10.42.0.1, NetworkManager gave another
    net = CaptiveNetwork(nm, lambda: 8989, dropin=DropIn(tmp_path), http_port=0)
    await net.activate_serve(SPEC)
    assert nm.log == ["activate", "deactivate", "activate"]
    assert (tmp_path / captive.DROPIN_NAME).read_text() == captive.dropin_text("127.0.0.1")
    assert (await net.observe(SPEC)).state == "activated" and net.http.address == "127.0.0.1"
    await net.close()


async def test_a_connection_not_in_shared_mode_gets_no_portal(tmp_path):
    (tmp_path / captive.DROPIN_NAME).write_text(captive.dropin_text("10.42.0.1"))  # ours, from before
    nm = FakeNM("127.0.0.1", "127.0.0.1", method="manual")
    net = CaptiveNetwork(nm, lambda: 8989, dropin=DropIn(tmp_path), http_port=0)
    await net.activate_serve(SPEC)
    assert nm.log == ["activate"] and net.http.address is None
    assert not (tmp_path / captive.DROPIN_NAME).exists()
    await net.close()


def test_the_package_removes_only_a_dropin_with_the_daemons_marker():
    from pathlib import Path

    postrm = (Path(__file__).resolve().parents[2] / "packaging/debian/postrm").read_text()
    assert f"{captive.DROPIN_DIR}/{captive.DROPIN_NAME}" in postrm
    assert f"grep -q '^{captive.MARKER.split(':')[0]}:'" in postrm
