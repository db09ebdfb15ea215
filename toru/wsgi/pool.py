"""The password pool: scrypt runs here, never on a worker's event loop.

A password hash costs tens to hundreds of milliseconds of CPU (toru/accounts.py's scrypt
parameters), which on the loop would stall every other request of the worker. The pool has
``threads`` threads and lets at most ``backlog`` more calls wait; a call beyond that is refused
at once with 503 and ``Retry-After`` instead of queueing for minutes behind a login storm
(the login rate limit still applies before a call gets here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..errors import Unavailable

R = TypeVar("R")


class PasswordPool:
    """A small bounded thread pool for password hashing (see the module docstring)."""

    def __init__(self, threads: int = 1, backlog: int = 2) -> None:
        self.limit = threads + backlog
        self.busy = 0
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None  # started on first use

    async def run(self, fn: Callable[..., R], *args: object) -> R:
        """``fn(*args)`` on a pool thread; 503 at once when ``limit`` calls are in progress."""
        if self.busy >= self.limit:
            raise Unavailable(
                "too many password checks in progress; try again shortly",
                code="busy",
                retry_after=1,
            )
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="toru-scrypt")
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.busy -= 1

    def close(self) -> None:
        """Stop the threads once the running calls are done (idempotent; a later ``run``
        starts new ones)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
