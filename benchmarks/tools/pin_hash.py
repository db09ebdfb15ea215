"""Measure: control-socket ping latency while the supervisor hashes a replaced 50 MB binary.

Run from the checkout: ``TORU_TEST_TIME_SCALE=3 .venv/bin/python -m benchmarks.tools.pin_hash``.
It prints numbers. With the hash in a worker thread
(supervisor/pins.py) the loop keeps answering while the file is read; compare by making
``BinaryHasher.hash`` call ``sha256_file`` inline.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.supervisor.helpers import MISBEHAVE, SupervisorProc
from toru.supervisor.client import ControlClient

PAD = b"#" * (50 << 20) + b"\n"


def write(path: Path, extra: bytes) -> None:
    head = f'#!/bin/sh\nexec "{sys.executable}" -I "{MISBEHAVE}" good alpha "$@"\n'
    path.write_bytes(head.encode() + extra + PAD)
    path.chmod(0o755)


def pings(client: ControlClient, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.monotonic()
        client.call("ping")
        out.append(time.monotonic() - t)


def summary(lat: list[float]) -> str:
    lat = sorted(lat)
    return f"n={len(lat)} p50 {lat[len(lat) // 2] * 1000:.2f} ms max {lat[-1] * 1000:.1f} ms"


def main() -> None:
    os.environ.setdefault("TORU_PLUGINS_USER", str(os.geteuid()))  # as tests/conftest.py
    home = Path(tempfile.mkdtemp(prefix="toru-m-", dir="/tmp"))
    binary = home / "plugins" / "alpha.binary"
    binary.parent.mkdir(parents=True)
    write(binary, b"")
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
        base: list[float] = []
        client = ControlClient(sup.socket, timeout=30)
        for _ in range(200):
            t = time.monotonic()
            client.call("ping")
            base.append(time.monotonic() - t)
        staged = home / "plugins" / ".new"
        write(staged, b"# v2\n")
        os.replace(staged, binary)
        during: list[float] = []
        stop = threading.Event()
        th = threading.Thread(
            target=pings, args=(ControlClient(sup.socket, timeout=30), stop, during)
        )
        th.start()
        t0 = time.monotonic()
        sup.call("rescan")
        took = time.monotonic() - t0
        stop.set()
        th.join()
        held = sup.info("alpha")["binary_change"] is not None
        print(f"rescan that hashed the replaced 50 MB binary: {took:.3f} s (held back: {held})")
        print(f"ping before: {summary(base)}")
        print(f"ping during the rescan: {summary(during)}")


if __name__ == "__main__":
    main()
