"""Slow clients cost a socket, not a worker: deadlines for headers and bodies.

gunicorn's asgi worker already closes an idle keep-alive connection (``keepalive``) and ends
a body wait that sees no data for ``timeout`` seconds, but nothing bounds the time a new
connection may take to send its first request's headers: 64 connections that trickle a
header byte now and then (slowloris) would stay open for ever. ``HeaderDeadlineProtocol``
gives every connection ``client_timeout`` seconds from accept to a complete header block;
then it is closed. Later requests on the connection are bounded by ``keepalive``.

The body deadline is the app's: ``read_body`` (toru/wsgi/http.py) reads a whole body within
``client_timeout`` or answers 408, and gunicorn closes a connection whose body was not read
to its end.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gunicorn.asgi.protocol import ASGIProtocol


class HeaderDeadlineProtocol(ASGIProtocol):
    """gunicorn's ASGI protocol plus a deadline for the first request's headers."""

    header_timeout = 15.0  # set from the config by ``install``

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = self.worker.loop.call_later(
            self.header_timeout, self._header_deadline
        )

    def _on_headers_complete(self) -> Any:
        self._cancel_header_timer()
        return super()._on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    @classmethod
    def _check_h1c_protocol_available(cls) -> bool:
        # NOTE: gunicorn caches this probe on ``cls`` but reads its flags from
        # ``ASGIProtocol``; probed on a subclass the flags stay unset and gunicorn_h1c (the
        # fast parser) is never used. Probing on the base keeps it working.
        return ASGIProtocol._check_h1c_protocol_available()

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._current_request is None:
            self._keepalive_timeout()  # closes the transport and wakes the connection task


def install(header_timeout: float) -> None:
    """Make this worker's asgi servers use ``HeaderDeadlineProtocol`` (``post_worker_init``).

    NOTE: gunicorn's ``ASGIWorker._serve`` builds its protocol as ``ASGIProtocol(self)`` by
    the module-level name, so replacing that name in the worker process, before the servers
    start, is the one seam short of copying ``_serve``.
    """
    from gunicorn.workers import gasgi

    HeaderDeadlineProtocol.header_timeout = header_timeout
    gasgi.ASGIProtocol = HeaderDeadlineProtocol  # type: ignore[misc]
