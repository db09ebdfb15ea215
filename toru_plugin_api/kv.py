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

from .aio import FramedProtocol
from .codec import ProtocolError
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


class _KvProtocol(FramedProtocol):
    """The channel's adapter: requests and their deadlines are the base's."""

    eof_reason = "kv channel closed by the host"

    def __init__(self, client: KvClient) -> None:
        super().__init__()
        self.client = client

    def timeout_error(self, rid: str) -> BaseException:
        return KvUnavailable(f"kv request timed out after {self.client.timeout:g} s")

    def lost_error(self, reason: str) -> BaseException:
        return KvUnavailable(reason)

    def on_protocol_error(self, exc: ProtocolError) -> None:
        self.fail_connection(f"bad frame on the kv channel: {exc}")

    def on_closed(self, reason: str) -> None:
        self.client._closed(reason)


class KvClient(_JsonMixin):
    """Async client of the host's per-plugin store over the inherited ``TORU_KV_FD`` socket.

    Every call sends one request and waits (at most ``timeout`` seconds) for the reply with
    its ``request_id``; concurrent calls are pipelined on the one connection.
    """

    def __init__(self, timeout: float = 5.0, on_lost: Callable[[], None] | None = None) -> None:
        self.timeout = timeout
        self.on_lost = on_lost
        self._proto: _KvProtocol | None = None
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
            _, client._proto = await loop.create_unix_connection(
                lambda: _KvProtocol(client), sock=sock
            )
        else:  # pragma: no cover - the host always passes a Unix socketpair
            _, client._proto = await loop.create_connection(lambda: _KvProtocol(client), sock=sock)
        return client

    @property
    def connected(self) -> bool:
        return self._proto is not None and self._lost is None

    async def _call(self, op: KvOp) -> Any:
        if self._lost is not None or self._proto is None:
            raise KvUnavailable(self._lost or "kv channel not connected")
        reply = await self._proto.request(kv_request_message("", op), self.timeout)
        try:
            return parse_kv_result(parse_message(reply).payload)
        except ProtocolError as exc:
            raise PluginError(str(exc), 502, "kv_bad_reply") from None

    def _closed(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            if self.on_lost is not None:
                self.on_lost()

    def close(self) -> None:
        """Close the channel (idempotent)."""
        if self._proto is not None:
            self._proto.close("kv channel closed by the plugin")

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
