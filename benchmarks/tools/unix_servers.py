"""Start and stop the servers a micro benchmark talks to over a Unix socket."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterable

Running = tuple[subprocess.Popen, socket.socket]


def start(cmd: list[str], path: str, env: dict[str, str] | None = None) -> Running:
    """Run ``cmd``, wait until it listens on ``path`` and connect to it.

    NOTE: the socket file exists from ``bind()``, a moment before ``listen()``: a connect
    in between is refused, so it is retried until the deadline.
    """
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return proc, s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{cmd[0]} did not listen on {path}") from None
            time.sleep(0.02)


def stop(running: Iterable[Running]) -> None:
    """Close each connection and kill its server."""
    for proc, s in running:
        s.close()
        proc.kill()
        proc.wait()


__all__ = ["Running", "start", "stop"]
