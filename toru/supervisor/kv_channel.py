"""Host side of the plugin -> host KV channel (the socketpair end behind ``TORU_KV_FD``).

The namespace is the plugin id the supervisor spawned on this channel, never a field of
the message, so a plugin cannot reach another plugin's keys. Requests may be pipelined;
each is answered after its SQLite statement returned (for ``set``: committed, see
``toru.store`` on durability).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apsw

from toru.store import Store
from toru_plugin_api.aio import FramedProtocol
from toru_plugin_api.codec import ProtocolError, encode
from toru_plugin_api.messages import make_message, parse_kv_op

MAX_VALUE = 1024 * 1024


def execute_kv(
    store: Store, plugin_id: str, action: str, key: str, value: str | None, prefix: str = ""
) -> dict[str, Any]:
    """Run one KV operation on the plugin's namespace; the reply payload."""
    if action == "get":
        return {"value": store.kv_get(plugin_id, key)}
    if action == "set":
        if value is None:
            raise ValueError("set needs a string value")
        if len(value) > MAX_VALUE:
            raise ValueError(f"value larger than {MAX_VALUE} characters")
        store.kv_set(plugin_id, key, value)
        return {"value": value}
    if action == "delete":
        store.kv_delete(plugin_id, key)
        return {"value": None}
    if action == "list":
        return {"keys": store.kv_list(plugin_id, prefix)}
    raise ValueError(f"unknown kv action {action!r}")


class KvChannel(FramedProtocol):
    """Serves one plugin's KV requests on its private channel."""

    def __init__(
        self,
        plugin_id: str,
        store: Store,
        max_frame: int,
        on_op: Callable[[str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(max_frame)
        self.plugin_id = plugin_id
        self.store = store
        self.on_op = on_op
        self.on_error = on_error

    def on_messages(self, msgs: list[Any]) -> None:
        if len(msgs) > 1:
            # PERF: pipelined requests of one chunk share one transaction (one WAL commit);
            # every reply is still sent only after that commit returned.
            try:
                with self.store.connection():
                    out = [self._answer(m) for m in msgs]
            except apsw.Error as exc:
                out = [self._error(m, f"storage error: {exc}") for m in msgs]
        else:
            out = [self._answer(msgs[0])]
        self.queue_frame(*out)

    def on_protocol_error(self, exc: ProtocolError) -> None:
        if self.on_error is not None:
            self.on_error(f"kv channel protocol error: {exc}")
        self.close("kv channel protocol error")  # after the replies to what came before

    def _answer(self, msg: dict[str, Any]) -> bytes:
        rid = msg.get("request_id")
        try:
            if msg.get("type") != "kv":
                raise ProtocolError("only kv messages are accepted on the kv channel")
            op = parse_kv_op(msg.get("payload"), allow_list=True)
            payload = execute_kv(self.store, self.plugin_id, op.action, op.key, op.value, op.prefix)
            if self.on_op is not None:
                self.on_op(op.action)
        except (ProtocolError, ValueError) as exc:
            payload = {"value": None, "error": str(exc)}
        except apsw.Error as exc:
            payload = {"value": None, "error": f"storage error: {exc}"}
        return encode(make_message("kv", payload, rid), self.max_frame)

    def _error(self, msg: dict[str, Any], error: str) -> bytes:
        payload = {"value": None, "error": error}
        return encode(make_message("kv", payload, msg.get("request_id")), self.max_frame)
