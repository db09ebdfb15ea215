"""Slow clients (slowloris): connections that send part of a request header and stall.

``SlowClients(host, port, n)`` keeps ``n`` such connections open for as long as it runs: one
the server closes (a header deadline, an error answer) is opened again at once, so the
pressure stays the same for the whole measurement. A web tier that handles these well
spends a socket on each and nothing else; one that gives a worker to each stops serving.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

# The request line and one header of a GET, never the blank line that ends the header.
PARTIAL = b"GET /api/plugins/route/bench-sdk/json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


class SlowClients:
    """``n`` stalled half-headers against ``host:port``, kept up by one thread."""

    def __init__(self, host: str, port: int, n: int, partial: bytes = PARTIAL) -> None:
        self.addr = (host, port)
        self.n = n
        self.partial = partial
        self.opened = 0
        self.closed_by_server = 0
        self.failed_connects = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self, sel: selectors.BaseSelector) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(self.addr)
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self.failed_connects += 1
            return
        sel.register(s, selectors.EVENT_WRITE, "connecting")
        self.opened += 1

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            while not self._stop.is_set():
                missing = self.n - len(sel.get_map())
                for _ in range(missing):
                    self._open(sel)
                if not missing and all(k.data == "stalled" for k in sel.get_map().values()):
                    self._ready.set()
                for key, _ in sel.select(timeout=0.05):
                    s: socket.socket = key.fileobj  # type: ignore[assignment]
                    if key.data == "connecting":
                        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            sel.unregister(s)
                            s.close()
                            self.failed_connects += 1
                            continue
                        with contextlib.suppress(OSError):
                            s.send(self.partial)
                        sel.modify(s, selectors.EVENT_READ, "stalled")
                        continue
                    try:  # readable: an answer (408/400) or the server closing it
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(s)
                        s.close()
                        self.closed_by_server += 1
                if self.failed_connects > 10 * self.n:
                    time.sleep(0.01)  # the listener refuses: do not spin
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    def start(self, ready_timeout: float = 5.0) -> SlowClients:
        """Open the connections; return once all of them have sent their half header."""
        self._thread = threading.Thread(target=self._loop, name="slow-clients", daemon=True)
        self._thread.start()
        self._ready.wait(ready_timeout)
        return self

    def stop(self) -> dict[str, Any]:
        """Close every connection; what happened meanwhile."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        return {
            "slow_clients": self.n,
            "slow_opened": self.opened,
            "slow_closed_by_server": self.closed_by_server,
            "slow_failed_connects": self.failed_connects,
        }


@contextlib.contextmanager
def slow_clients(url: str, n: int) -> Iterator[dict[str, Any]]:
    """``with slow_clients("http://127.0.0.1:8080", 64) as stats:``: ``stats`` is filled
    with the counters when the block ends."""
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    sc = SlowClients(host, int(port), n).start()
    stats: dict[str, Any] = {}
    try:
        yield stats
    finally:
        stats.update(sc.stop())
