"""One layer above the codec, without I/O: request ids and the requests waiting for replies.

``Pending`` allocates ids and keeps, per id, who waits for the reply and until when. It
touches no socket, loop or clock: callers pass deadlines on whatever monotonic clock they
use and ask what has expired. The asyncio base (``toru_plugin_api.aio.FramedProtocol``) and
the blocking channel share it, so "match a reply to its request by id" exists once.

Ids are strings (docs/plugins/PROTOCOL.md); a peer that echoes an integer id is matched by
its decimal string, as the protocol allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["Entry", "Pending", "reply_key"]

# (callback, deadline, data): ``callback(reply, error)`` is called exactly once by the
# owner; ``data`` is the owner's (PluginConnection keeps a relay's raw-reply hook there).
Entry = tuple[Callable[[Any, Any], None], float, Any]


def reply_key(rid: Any) -> str | None:
    """The pending key a reply's id refers to: a string as is, an integer as its decimal
    string, anything else (absent, bool, float, object) ``None``."""
    if type(rid) is str:
        return rid
    if type(rid) is int:
        return str(rid)
    return None


class Pending:
    """Requests waiting for their reply, keyed by id, with the earliest deadline tracked.

    ``earliest`` is the deadline a single timer should be armed for (``math.inf`` when
    nothing waits): ``add`` says when a new request moved it earlier, ``expire`` recomputes
    it. PERF: one timer per connection instead of one per request.
    """

    __slots__ = ("_seq", "earliest", "entries")

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.earliest = math.inf
        self._seq = 0

    def __len__(self) -> int:
        return len(self.entries)

    def next_id(self) -> str:
        """A fresh request id, unique on this endpoint."""
        self._seq += 1
        return str(self._seq)

    def add(
        self, rid: str, deadline: float, callback: Callable[[Any, Any], None], data: Any = None
    ) -> bool:
        """Wait for the reply to ``rid`` until ``deadline``; True when that is now the
        earliest deadline (the owner re-arms its timer)."""
        self.entries[rid] = (callback, deadline, data)
        if deadline < self.earliest:
            self.earliest = deadline
            return True
        return False

    def take(self, rid: Any) -> Entry | None:
        """Remove and return the entry a reply with id ``rid`` answers; ``None`` for an
        unknown, late (already expired) or unusable id."""
        key = rid if type(rid) is str else reply_key(rid)
        if key is None:
            return None
        return self.entries.pop(key, None)

    def expire(self, now: float) -> list[tuple[str, Entry]]:
        """Remove and return every entry whose deadline is ``<= now``; ``earliest`` becomes
        the deadline of what is left."""
        entries = self.entries
        expired = [(rid, e) for rid, e in entries.items() if e[1] <= now]
        for rid, _ in expired:
            del entries[rid]
        self.earliest = min((e[1] for e in entries.values()), default=math.inf)
        return expired

    def drain(self) -> list[Entry]:
        """Remove and return every entry (the connection is gone: fail them all at once)."""
        entries, self.entries = self.entries, {}
        self.earliest = math.inf
        return list(entries.values())
