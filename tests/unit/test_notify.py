"""sd_notify over a real datagram socket: messages arrive, and a full socket never blocks us."""

import socket
import time

from conjuringd.notify import SystemdNotifier, watchdog_interval


def test_messages_reach_the_socket_and_a_full_queue_does_not_block(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = SystemdNotifier()
    notifier.notify("READY=1")
    assert receiver.recv(100) == b"READY=1"
    started = time.monotonic()
    for _ in range(2000):  # far beyond the socket's queue: nobody reads
        notifier.notify("WATCHDOG=1")
    assert time.monotonic() - started < 2, "notify must drop messages rather than block"
    receiver.close()


def test_no_notify_socket_means_silence(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    SystemdNotifier().notify("READY=1")  # must not raise


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval() is None
