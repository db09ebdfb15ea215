"""``WriteBatch``: frames queued during one read go out together, and one broken transport
strands no other connection of the batch."""

from __future__ import annotations

import asyncio

from toru_plugin_api.aio import FramedProtocol, WriteBatch


class _Transport:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.writes: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default  # no socket: FramedProtocol.connection_made sizes none

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.writes.append(data)


def test_a_failing_write_does_not_strand_the_rest_of_the_batch():
    async def scenario() -> None:
        conns = [FramedProtocol(1024) for _ in range(3)]
        transports = [_Transport(), _Transport(fail=True), _Transport()]
        for c, t in zip(conns, transports, strict=True):
            c.connection_made(t)
        batch = WriteBatch.current()
        batch.begin()
        for i, c in enumerate(conns):
            c.queue_frame(b"a%d" % i)
            c.queue_frame(b"b%d" % i)
        batch.end()
        assert transports[0].writes == [b"a0b0"]  # one write per connection per batch
        assert transports[2].writes == [b"a2b2"]
        assert batch.dirty == [] and batch.depth == 0
        # the connection whose write failed is not left marked as scheduled forever
        transports[1].fail = False
        batch.begin()
        conns[1].queue_frame(b"c1")
        batch.end()
        assert transports[1].writes == [b"c1"]

    asyncio.run(scenario())


def test_each_thread_has_its_own_batch():
    """An SDK plugin served from a thread (the harness) and a loop in the main thread must
    not flush into each other's batch."""
    import threading

    seen: list[WriteBatch] = []
    t = threading.Thread(target=lambda: seen.append(WriteBatch.current()))
    t.start()
    t.join()
    assert seen[0] is not WriteBatch.current()
    assert WriteBatch.current() is WriteBatch.current()
