"""Who is still connected to a plugin's Unix socket (Linux ``/proc/net/unix``).

An upgrade's old instance must not be stopped while a web worker still has a direct-channel
request in flight on it (docs/ARCHITECTURE.md, "Zero-downtime upgrade"). The supervisor
cannot see those requests, but it can see the connections: every socket ``accept()``ed on
a listening Unix socket carries the listener's path in ``/proc/net/unix``. A worker closes
its connection to the old instance once its requests there are answered.
"""

from __future__ import annotations

from pathlib import Path

PROC_NET_UNIX = "/proc/net/unix"
_CONNECTED = "03"  # SS_CONNECTED in the "St" column


def connections_to(path: Path) -> int:
    """Connected sockets accepted on the listening socket ``path``; 0 when unknown."""
    target = str(path)
    count = 0
    try:
        with open(PROC_NET_UNIX, encoding="utf-8", errors="replace") as f:
            next(f, None)  # the header
            for line in f:
                fields = line.rstrip("\n").split(None, 7)
                if len(fields) == 8 and fields[5] == _CONNECTED and fields[7] == target:
                    count += 1
    except OSError:
        return 0
    return count
