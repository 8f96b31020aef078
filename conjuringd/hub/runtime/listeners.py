"""Who listens on a TCP port in this network namespace: the hub's proof of whose server answers there."""

from __future__ import annotations


def listener_uids(port: int, tables=("/proc/net/tcp", "/proc/net/tcp6")) -> set[int]:
    """The uids of the sockets listening on `port` (any address): who would answer a connection to it."""
    uids = set()
    for table in tables:
        try:
            with open(table) as rows:
                next(rows, None)
                for row in rows:
                    fields = row.split()
                    if len(fields) > 7 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        uids.add(int(fields[7]))
        except OSError:
            continue
    return uids
