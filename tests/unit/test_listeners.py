"""The hub's readiness proof for a server started the usual way: whose sockets listen on its port."""

from __future__ import annotations

import pwd
import socket
import subprocess
import sys

from conjuringd.hub.dockerfile import RUNTIME_SRC

sys.path.insert(0, str(RUNTIME_SRC))
from listeners import listener_uids  # noqa: E402

NOBODY = pwd.getpwnam("nobody")


def test_the_owner_of_each_listener_on_the_port_is_seen_connected_sockets_are_not():
    mine = socket.socket()
    mine.bind(("127.0.0.1", 0))
    port = mine.getsockname()[1]
    assert listener_uids(port) == set()  # bound, not listening
    mine.listen()
    assert listener_uids(port) == {0}
    client = socket.create_connection(("127.0.0.1", port))
    assert listener_uids(client.getsockname()[1]) == set()  # an established connection's port is not a listener
    client.close()
    mine.close()
    # another account listening on it, on every address and over IPv6 (which also takes 127.0.0.1)
    script = (f"import socket, sys; s = socket.socket(socket.AF_INET6); s.bind(('::', {port})); s.listen();"
              "print('up', flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", script], user=NOBODY.pw_uid, group=NOBODY.pw_gid, extra_groups=[],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "up\n"
        assert listener_uids(port) == {NOBODY.pw_uid}
    finally:
        other.stdin.close()
        other.wait(10)
