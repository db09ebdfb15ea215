"""Running async tests the way STYLE.md asks: under uvloop, failing on any exception the loop
only logs (a callback that raised, a Future's exception nobody retrieved)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import uvloop


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on a fresh uvloop; any exception the loop only logs fails the test."""
    errors: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        return await coro

    result = uvloop.run(main())
    assert not errors, errors
    return result
