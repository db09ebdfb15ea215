"""The password pool: work runs off the loop on at most ``threads`` threads, ``backlog``
more calls wait, and one beyond that is refused at once (503 + Retry-After), not queued."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests import timing
from tests.loops import run_async
from toru.errors import Unavailable
from toru.wsgi.pool import PasswordPool


def test_bounded_pool_refuses_excess_at_once_and_keeps_the_loop_free():
    release = threading.Event()
    names: list[str] = []

    def slow_hash() -> str:
        names.append(threading.current_thread().name)
        release.wait(timing.WAIT)
        return "hashed"

    async def main():
        pool = PasswordPool(threads=1, backlog=2)
        running = [asyncio.ensure_future(pool.run(slow_hash)) for _ in range(3)]
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(Unavailable) as exc:  # the fourth: refused, not queued
            await pool.run(slow_hash)
        assert exc.value.status == 503 and exc.value.retry_after == 1
        await asyncio.sleep(0.01)  # the loop still runs other work meanwhile
        assert loop.time() - t0 < timing.scaled(1.0)
        release.set()
        assert await asyncio.gather(*running) == ["hashed"] * 3
        assert await pool.run(slow_hash) == "hashed"  # capacity is back
        pool.close()
        pool.close()  # idempotent

    run_async(main())
    assert names and all(n.startswith("toru-scrypt") for n in names)
