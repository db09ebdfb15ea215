"""The ``http`` control op's relay: one request from a worker to its plugin and the reply back.

The hot path of every proxied request (docs/control-protocol.md, ``http``). The supervisor
reads only what it needs: the envelope (id, route) and, of the reply, what it checks.

- Request: the workers and the CLI send the plugin request's JSON (method, path, headers)
  at the start of the binary frame's tail, its size in ``args.request_json``, the body after
  it (``toru.supervisor.client.http_frame``). ``request_parts`` hands those bytes on as they
  came: the plugin connection writes its envelope around them, never parsing or
  re-encoding them. The older form (method, path and headers inside ``args``) is still read
  and encoded once here.
- Reply: ``HttpRelay`` checks the plugin's reply with the SDK's one ``validate_http_reply``
  (a missing ``status`` is 200), records the latency, warns about a Toru session cookie,
  and answers with the raw bytes of the plugin's message; a bad reply is 502
  ``bad_response`` (counted, and reported to the plugin's log and events, rate-limited).
  Timeouts (504) and a broken connection (502) come from the plugin connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from toru.errors import BadGateway, BadRequest, ToruError
from toru.session_cookie import sets_toru_cookie
from toru_plugin_api.codec import dumps
from toru_plugin_api.messages import BadReply, validate_http_reply

from . import metrics

if TYPE_CHECKING:
    from .supervised import SupervisedPlugin

# (rid, reply payload, raw message, raw body of a binary reply or None)
HttpAnswer = Callable[[Any, dict[str, Any], bytes, bytes | None], None]
HttpFail = Callable[[Any, ToruError], None]


def request_parts(
    args: dict[str, Any], tail: bytes | memoryview | None
) -> tuple[bytes, bytes | memoryview | None]:
    """The plugin request's JSON object and its raw body (None: the JSON carries it).

    ``args`` is the op's, without its routing keys; ``tail`` the binary frame's tail.
    NOTE: the JSON of the ``request_json`` form is not parsed: both ends of the control
    socket (0600) are Toru's, and its client writes it with the codec (``http_frame``); a
    frame that does not even start and end like an object is refused.
    """
    size = args.get("request_json")
    if size is None:  # the older form: the request in ``args``, the body in the tail or not
        if type(args.get("method")) is not str or type(args.get("path")) is not str:
            raise BadRequest("http needs string method and path")
        return dumps(args), tail
    if type(size) is not int or tail is None or not 2 <= size <= len(tail):
        raise BadRequest("http request_json must be the size of the JSON at the frame's tail")
    view = memoryview(tail)  # PERF: the body is not copied out of the frame
    request = bytes(view[:size])
    if request[:1] != b"{" or request[-1:] != b"}":
        raise BadRequest("http request_json does not frame a JSON object")
    return request, view[size:]


class HttpRelay:
    """One proxied request in flight: checks the plugin's reply, records it, answers."""

    __slots__ = ("answer", "fail", "plugin", "rid", "t0")

    def __init__(
        self, plugin: SupervisedPlugin, rid: Any, answer: HttpAnswer, fail: HttpFail
    ) -> None:
        self.plugin = plugin
        self.rid = rid
        self.answer = answer
        self.fail = fail
        self.t0 = time.monotonic()

    def relayed(self, msg: dict[str, Any], raw: bytes, body: bytes | None) -> None:
        payload = msg.get("payload")
        try:
            validate_http_reply(payload, body)
        except BadReply as exc:
            metrics.PROXY_ERRORS.labels(self.plugin.id, "bad_response").inc()
            self.plugin.on_bad_reply(str(exc))
            self.fail(self.rid, BadGateway(f"plugin {self.plugin.id} sent a bad reply: {exc}"))
            return
        self.plugin.stats.record(time.monotonic() - self.t0)
        if sets_toru_cookie(payload.get("headers")):  # type: ignore[union-attr]
            self.plugin.on_toru_cookie()
        self.answer(self.rid, payload, raw, body)  # type: ignore[arg-type]

    def __call__(self, reply: dict[str, Any] | None, err: ToruError | None) -> None:
        """The connection's error path (504 on the deadline, 502 when it broke)."""
        self.fail(self.rid, err or BadGateway(f"plugin {self.plugin.id} sent no reply"))
