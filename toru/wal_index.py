"""Has any connection committed to a WAL database since I last looked? Without a SQL call.

PERF: the web tier's auth cache asks this on every authenticated request (toru/accounts.py,
via ``Store.data_version``). ``PRAGMA data_version`` answers it exactly but is a statement
per request (~8% of a worker's CPU on the plugin route, measured with py-spy). SQLite keeps
the WAL-index header in the ``-shm`` file that every connection maps; its format is part of
the documented file format (https://www.sqlite.org/walformat.html, "The WAL-Index Header"):
two copies of a 48-byte header, the first copy written last, and ``iChange`` incremented by
every transaction that writes the header (each commit, each WAL reset). If those 96 bytes
are unchanged, no connection committed, and the previous ``data_version`` still holds; any
change (a torn read included) only means "ask SQLite", so a wrong guess costs a PRAGMA,
never a stale answer.

The mapping is only made while a connection of this thread has the database open in WAL
mode: SQLite truncates ``-shm`` only when it is the first connection to open it, which
cannot happen while ours is open.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

HEADER = 96  # both copies of the WAL-index header


class WalIndex:
    """A read-only view of one database's WAL-index header."""

    __slots__ = ("_ino", "_map", "_path")

    def __init__(self, mapping: mmap.mmap, path: str, ino: int) -> None:
        self._map = mapping
        self._path = path
        self._ino = ino  # SQLite may delete and recreate -shm: a stale mapping never changes

    @classmethod
    def open(cls, db_path: Path) -> WalIndex | None:
        """The view for ``db_path``, or None when there is no usable ``-shm`` (not WAL)."""
        path = f"{db_path}-shm"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_size < HEADER:
                return None
            return cls(mmap.mmap(fd, HEADER, prot=mmap.PROT_READ), path, st.st_ino)
        except OSError:
            return None
        finally:
            os.close(fd)

    def header(self) -> bytes | None:
        """The header bytes now (compare with an earlier read; equal means no commit), or
        None when ``-shm`` is no longer the file mapped (reopen it)."""
        try:
            if os.stat(self._path).st_ino != self._ino:
                return None
        except OSError:
            return None
        return self._map[:HEADER]

    def close(self) -> None:
        self._map.close()
