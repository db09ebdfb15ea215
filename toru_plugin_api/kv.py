"""``ctx.kv``: the plugin's own key-value store, kept by the host.

The supervisor gives each plugin one end of a ``socketpair()`` at spawn and names its fd in
``TORU_KV_FD``. Over it the plugin sends ``kv`` requests (same framing as the plugin socket)
and the host answers with the same ``request_id``; requests are pipelined, so many handlers
can wait on the store at once. The namespace is fixed by the channel, never by a message.
See docs/plugins/PROTOCOL.md, "Plugin -> host KV channel".

A plugin started without the channel (by an original Toru host, or by hand) gets a
``MemoryKv`` instead: same API, nothing persisted.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any, Protocol

from .codec import DEFAULT_MAX_FRAME, Decoder, ProtocolError, encode
from .messages import KvOp, PluginError, kv_request_message, parse_kv_result, parse_message

__all__ = ["KvClient", "KvStore", "KvUnavailable", "MemoryKv"]


class KvUnavailable(PluginError):
    """The host's store could not be reached (channel closed, or no answer in time)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503, "kv_unavailable")


class KvStore(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def list(self, prefix: str = "") -> list[str]: ...


class _JsonMixin:
    async def get_json(self, key: str, default: Any = None) -> Any:
        """``get`` and parse JSON; ``default`` when the key is absent."""
        raw = await self.get(key)  # type: ignore[attr-defined]
        return default if raw is None else json.loads(raw)

    async def set_json(self, key: str, value: Any) -> None:
        await self.set(key, json.dumps(value, separators=(",", ":")))  # type: ignore[attr-defined]


class MemoryKv(_JsonMixin):
    """In-process store for plugins run without a host channel (nothing is persisted)."""

    def __init__(self, data: dict[str, str] | None = None) -> None:
        self.data: dict[str, str] = {} if data is None else data

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def set(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("kv values are strings; use set_json for other values")
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.data if k.startswith(prefix))


class _KvProtocol(asyncio.Protocol):
    def __init__(self, client: KvClient) -> None:
        self.client = client
        self.decoder = Decoder(DEFAULT_MAX_FRAME)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            msgs = self.decoder.feed(data)
        except ProtocolError as exc:
            for m in exc.decoded:
                self.client._resolve(m)
            self.client._fail_all(f"bad frame on the kv channel: {exc}")
            if self.client._transport is not None:
                self.client._transport.close()
            return
        for m in msgs:
            self.client._resolve(m)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._closed("kv channel closed by the host")


class KvClient(_JsonMixin):
    """Async client of the host's per-plugin store over the inherited ``TORU_KV_FD`` socket.

    Every call sends one request and waits (at most ``timeout`` seconds) for the reply with
    its ``request_id``; concurrent calls are pipelined on the one connection.
    """

    def __init__(self, timeout: float = 5.0, on_lost: Callable[[], None] | None = None) -> None:
        self.timeout = timeout
        self.on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._next = 0
        self._lost: str | None = None

    @classmethod
    async def connect_fd(
        cls, fd: int, timeout: float = 5.0, on_lost: Callable[[], None] | None = None
    ) -> KvClient:
        """Wrap an inherited socket fd (``TORU_KV_FD``)."""
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        client = cls(timeout, on_lost)
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            await loop.create_unix_connection(lambda: _KvProtocol(client), sock=sock)
        else:  # pragma: no cover - the host always passes a Unix socketpair
            await loop.create_connection(lambda: _KvProtocol(client), sock=sock)
        return client

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._lost is None

    async def _call(self, op: KvOp) -> Any:
        if self._lost is not None or self._transport is None:
            raise KvUnavailable(self._lost or "kv channel not connected")
        self._next += 1
        rid = f"k{self._next}"
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[rid] = fut
        self._transport.write(encode(kv_request_message(rid, op)))
        timer = loop.call_later(self.timeout, self._expire, rid)
        try:
            return await fut
        finally:
            timer.cancel()
            self._pending.pop(rid, None)

    def _expire(self, rid: str) -> None:
        fut = self._pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(KvUnavailable(f"kv request timed out after {self.timeout:g} s"))

    def _resolve(self, msg: Any) -> None:
        try:
            m = parse_message(msg)
        except ProtocolError:
            return
        fut = self._pending.pop(m.request_id or "", None)
        if fut is None or fut.done():
            return  # late answer after a timeout
        try:
            fut.set_result(parse_kv_result(m.payload))
        except (PluginError, ProtocolError) as exc:
            fut.set_exception(
                exc if isinstance(exc, PluginError) else PluginError(str(exc), 502, "kv_bad_reply")
            )

    def _fail_all(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(KvUnavailable(why))

    def _closed(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            self._fail_all(why)
            if self.on_lost is not None:
                self.on_lost()

    def close(self) -> None:
        """Close the channel (idempotent)."""
        if self._transport is not None:
            self._transport.close()

    async def get(self, key: str) -> str | None:
        """The value stored at ``key``, or ``None``."""
        return await self._call(KvOp("get", key))

    async def set(self, key: str, value: str) -> None:
        """Store a string value (use ``set_json`` for anything else)."""
        if not isinstance(value, str):
            raise TypeError("kv values are strings; use set_json for other values")
        await self._call(KvOp("set", key, value))

    async def delete(self, key: str) -> None:
        await self._call(KvOp("delete", key))

    async def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        keys = await self._call(KvOp("list", prefix=prefix))
        return list(keys or [])
