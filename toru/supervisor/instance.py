"""One process (instance) of a plugin, apart from the state machine that owns it.

``SupervisedPlugin`` runs one instance at a time, except during an upgrade, when the new
one starts beside the old one (docs/ARCHITECTURE.md, "Zero-downtime upgrade"). What does
not depend on which instance serves lives here: the polite stop, releasing its channels,
the new instance's callbacks until it serves, and the health probe that says it may.
"""

from __future__ import annotations

import asyncio
from typing import Any

from toru.errors import ToruError
from toru_plugin_api.messages import lifecycle_shutdown

from .launcher import LaunchCallbacks, Launched
from .process import describe_exit

_PROBE = {"X-Toru-Probe": "1"}


def probe_request() -> dict[str, Any]:
    """The health probe's http payload: ``GET /health`` with ``X-Toru-Probe: 1``."""
    return {"payload": {"method": "GET", "path": "/health", "headers": _PROBE, "body": ""}}


async def until_healthy(new: Launched, lost: asyncio.Future[str], timeout: float) -> None:
    """The new instance answers a probe in ``timeout``; else ``UpgradeFailed``.

    Its process exiting or its connection breaking (``lost``) fails at once. The probe goes
    after ``init`` on the same connection, so an answer means ``init`` was taken (original
    plugins handle messages in order; the SDK answers only after ``init``).
    """
    answered: asyncio.Future[ToruError | None] = asyncio.get_running_loop().create_future()

    def done(reply: dict[str, Any] | None, err: ToruError | None) -> None:
        if not answered.done():
            answered.set_result(err)

    new.connection.request("http", probe_request(), timeout, done)
    exited = new.process.exited
    await asyncio.wait({answered, exited, lost}, return_when=asyncio.FIRST_COMPLETED)
    if exited.done():
        raise UpgradeFailed("the new version exited while starting", describe_exit(exited.result()))
    if lost.done():
        raise UpgradeFailed(f"the new version closed its connection ({lost.result()})")
    err = answered.result()
    if err is not None:
        raise UpgradeFailed(
            f"the new version never got healthy: {err.message} (health probe,"
            f" TORU_HEALTH_TIMEOUT / supervisor.health_timeout {timeout:g} s)"
        )


class UpgradeFailed(Exception):
    """The new version did not take over; the old process serves on."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


class Candidate:
    """``LaunchCallbacks`` of an upgrade's new instance.

    Its output and KV operations are the plugin's at once. A lost connection or a timeout
    (its probe) only fails the upgrade until it serves (``promoted``): before that, it must
    not look like a crash of the old instance.
    """

    def __init__(self, plugin: LaunchCallbacks) -> None:
        self.plugin = plugin
        self.promoted = False
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_output(self, stream: str, lines: list[bytes]) -> None:
        self.plugin.on_output(stream, lines)

    def on_kv_op(self, action: str) -> None:
        self.plugin.on_kv_op(action)

    def on_kv_error(self, reason: str) -> None:
        self.plugin.on_kv_error(reason)

    def on_connection_lost(self, reason: str) -> None:
        if self.promoted:
            self.plugin.on_connection_lost(reason)
        elif not self.lost.done():
            self.lost.set_result(reason)

    def on_request_timeout(self, request_id: str) -> None:
        if self.promoted:
            self.plugin.on_request_timeout(request_id)

    def launch_aborted(self) -> bool:
        return self.plugin.launch_aborted()


async def stop_instance(launched: Launched, why: str, grace: float) -> None:
    """Polite stop of one instance: ``shutdown`` message, wait, SIGTERM the group, SIGKILL
    after the grace."""
    proc = launched.process
    if proc.exited.done():
        return
    launched.connection.send(lifecycle_shutdown())
    launched.connection.close(f"stopping ({why})")
    launched.close_kv()
    if await proc.wait(grace / 2) is None:
        await proc.terminate(grace / 2)


async def release(launched: Launched) -> None:
    """After an instance's process is gone: close its channels, collect its last output."""
    launched.connection.close("plugin stopped")
    launched.close_kv()
    drain = getattr(launched.process, "drain_output", None)
    if drain is not None:
        await drain(0.5)
