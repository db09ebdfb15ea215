"""``run/routes.gen``: a counter the supervisor bumps whenever a plugin route changes.

Workers that send plugin-route requests straight to a plugin (docs/control-protocol.md,
"Direct channel") keep a copy of the supervisor's route table. PERF: they check it against
this counter on every request by reading 8 bytes of a shared mapping (no syscall, well
under a microsecond) and fetch the table again (control op ``routes``) only when it moved.

The value starts at the supervisor's start time in nanoseconds, so a restarted supervisor
never repeats an earlier value. The file is opened without truncation: workers that mapped
it before a supervisor restart see the new values too. A torn read is harmless, it only
looks like a change and costs one ``routes`` call.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path

SIZE = 8
_FORMAT = "<Q"


class RouteGeneration:
    """The writer side; workers read the file with ``read_generation``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SIZE:
                os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self.value = time.time_ns()
        self._write()

    def _write(self) -> None:
        struct.pack_into(_FORMAT, self._map, 0, self.value & 0xFFFFFFFFFFFFFFFF)

    def bump(self) -> int:
        """Announce a change; the new value."""
        self.value += 1
        self._write()
        return self.value

    def close(self) -> None:
        self._map.close()


def open_generation(path: Path) -> mmap.mmap | None:
    """A read-only mapping of the counter, or None while the supervisor has not created it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size < SIZE:
            return None
        return mmap.mmap(fd, SIZE, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def read_generation(mapping: mmap.mmap) -> int:
    return struct.unpack_from(_FORMAT, mapping, 0)[0]
