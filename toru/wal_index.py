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

NOTE: the file descriptors opened here are never closed, and the mappings never unmapped
(Python's ``mmap`` holds a ``dup`` of the descriptor and closes it on ``close()``). POSIX
record locks belong to the process and the file: closing *any* descriptor of ``-shm``
drops every lock this process holds on it, SQLite's included (its shared lock on the
"DMS" byte that says "connections are using this WAL-index", and the read and write locks
of a transaction in progress on another thread). Without the DMS lock the next process to
open the database believes it is the first, truncates ``-shm`` and rebuilds it under the
running connections. So there is one view per ``-shm`` file per process, for the life of
the process: two descriptors and one page each.

A view is only taken while a connection of this thread has the database open in WAL mode
(after a read). SQLite then holds a shared lock on the database file, so ``-shm`` can be
neither deleted (only the last connection does that, under an exclusive lock) nor
re-initialised (only a first connection does that, when no DMS lock is held): the file
at the path is the one mapped for as long as the connection stays open. A new connection
takes the view again and maps the file anew if it was replaced meanwhile (its inode).
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

HEADER = 96  # both copies of the WAL-index header

_views: dict[str, WalIndex] = {}  # "-shm" path -> this process's view of it
_kept: list[object] = []  # descriptors and views no longer used: never closed (NOTE above)
_lock = threading.Lock()


class WalIndex:
    """A read-only view of one database's WAL-index header, shared by the process."""

    __slots__ = ("_fd", "_map", "ino")

    def __init__(self, fd: int, mapping: mmap.mmap, ino: int) -> None:
        self._fd = fd  # never closed: see the module's NOTE
        self._map = mapping
        self.ino = ino

    @classmethod
    def of(cls, db_path: Path) -> WalIndex | None:
        """The view of ``db_path``'s ``-shm`` (mapped anew if the file was replaced), or
        None when there is no usable one (not WAL). Once per connection, not per call."""
        path = f"{db_path}-shm"
        with _lock:
            try:
                st = os.stat(path)
            except OSError:
                return None
            view = _views.get(path)
            if view is not None and view.ino == st.st_ino:
                return view
            if st.st_size < HEADER:
                return None
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                mapping = mmap.mmap(fd, HEADER, prot=mmap.PROT_READ)
            except (OSError, ValueError):  # shrunk since the stat
                _kept.append(fd)
                return None
            if os.fstat(fd).st_ino != st.st_ino:  # replaced since the stat: next connection
                _kept.append((fd, mapping))
                return None
            if view is not None:
                _kept.append(view)
            view = _views[path] = cls(fd, mapping, st.st_ino)
            return view

    def header(self) -> bytes:
        """The header bytes now (compare with an earlier read; equal means no commit)."""
        return self._map[:HEADER]
