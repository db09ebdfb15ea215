"""Who is still connected to a plugin process (Linux ``/proc``).

An upgrade's old instance must not be stopped while a web worker still has a direct-channel
request in flight on it (docs/ARCHITECTURE.md, "Zero-downtime upgrade"). The supervisor
cannot see those requests, but it can see the connections: a socket ``accept()``ed on a
listening Unix socket carries the listener's bound name in ``/proc/net/unix`` (the KV
socketpair and outgoing connections carry none), and ``/proc/<pid>/fd`` says which sockets
the plugin holds. A worker closes its connection to the old instance once its requests
there are answered.
"""

from __future__ import annotations

import os

PROC_NET_UNIX = "/proc/net/unix"
_CONNECTED = "03"  # SS_CONNECTED in the "St" column


def accepted_connections(pid: int) -> int:
    """Connected Unix sockets that process ``pid`` accepted; 0 when it cannot be known."""
    fd_dir = f"/proc/{pid}/fd"
    inodes = set()
    try:
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        count = 0
        with open(PROC_NET_UNIX, encoding="utf-8", errors="replace") as f:
            next(f, None)  # the header
            for line in f:
                fields = line.split(None, 7)  # 8 fields: the socket has a name
                if len(fields) == 8 and fields[5] == _CONNECTED and fields[6] in inodes:
                    count += 1
    except OSError:
        return 0
    return count
