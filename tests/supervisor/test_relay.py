"""The http relay path with hostile plugin replies: control connection -> Supervisor.http ->
plugin connection (a real socketpair) -> back, in process.

The control side is a real ``ControlConnection`` with a capturing transport; the plugin side
is a raw socket the test writes arbitrary bytes to. Every control reply is checked with the
worker client's own ``reply_result``, so the spliced form is read exactly as workers read it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from toru.errors import ToruError
from toru.supervisor.client import http_frame, reply_result
from toru.supervisor.connection import PluginConnection
from toru.supervisor.control_server import ControlConnection, ControlServer
from toru.supervisor.states import PluginState
from toru.supervisor.stats import PluginStats
from toru.supervisor.supervisor import Supervisor
from toru_plugin_api.codec import (
    BODY,
    HEADER,
    Decoder,
    dumps,
    encode,
    encode_binary,
    encode_payload,
)
from toru_plugin_api.messages import validate_http_reply

from .. import timing
from .test_units import run_async, until

MAX = 4096


class CaptureTransport:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class Rig:
    """One plugin ``p`` on route ``/p`` behind a real plugin connection."""

    def __init__(self, conn: PluginConnection, plugin_sock: socket.socket) -> None:
        self.conn = conn
        self.plugin_sock = plugin_sock
        self.stats = PluginStats()
        self.bad_replies: list[str] = []
        plugin = SimpleNamespace(
            on_bad_reply=self.bad_replies.append,
            id="p",
            metadata=object(),
            state=PluginState.RUNNING,
            launched=SimpleNamespace(connection=conn),
            stats=self.stats,
            admission=lambda: conn,
        )
        sup = Supervisor.__new__(Supervisor)
        sup.config = SimpleNamespace(max_frame=MAX)
        sup.http_timeout = timing.HTTP  # must not fire; the 504 test sets a short one
        sup.log = SimpleNamespace(warn=lambda *a, **k: None, error=lambda *a, **k: None)
        sup.plugins = {"p": plugin}
        sup.routes = {"/p": plugin}
        self.control = ControlConnection(ControlServer(sup, Path("/nonexistent")))
        self.out = CaptureTransport()
        self.control.transport = self.out  # type: ignore[assignment]
        self.replies = Decoder(1 << 20)
        self.got: dict[Any, dict[str, Any]] = {}
        self.plugin_dec = Decoder(1 << 20)

    def ask(self, rid: int, form: str | None = "message", **args: Any) -> None:
        a = {"route": "/p", "method": "GET", "path": f"/x/{rid}", "headers": {}, "body": ""}
        a.update(args)
        msg: dict[str, Any] = {"v": 1, "id": rid, "op": "http", "args": a}
        if form:
            msg["reply"] = form
        self.control.data_received(encode(msg))

    async def requests(self, n: int) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        got: list[dict[str, Any]] = []
        while len(got) < n:
            got += self.plugin_dec.feed(await loop.sock_recv(self.plugin_sock, 65536))
        return got

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.plugin_sock, data)

    def collect(self) -> dict[Any, dict[str, Any]]:
        for m in self.replies.feed(bytes(self.out.data)):
            self.got[m["id"]] = m
        self.out.data.clear()
        return self.got

    async def answered(self, *rids: Any) -> dict[Any, dict[str, Any]]:
        await until(lambda: all(r in self.collect() for r in rids))
        return self.got


def relay(scenario: Any, binary: bool = False) -> Any:
    async def main() -> Any:
        loop = asyncio.get_running_loop()
        host, plugin = socket.socketpair()
        plugin.setblocking(False)
        lost: list[str] = []
        _, conn = await loop.create_unix_connection(
            lambda: PluginConnection("p", MAX, on_lost=lost.append, binary=binary), sock=host
        )
        rig = Rig(conn, plugin)
        try:
            return await scenario(rig), lost
        finally:
            conn.close()
            plugin.close()

    return run_async(main())


def frame(text: str | bytes) -> bytes:
    return encode_payload(text.encode() if isinstance(text, str) else text, 1 << 30)


def result_or_error(msg: dict[str, Any]) -> Any:
    try:
        return reply_result(msg)
    except ToruError as exc:
        return exc


def bad_responses() -> float:
    from prometheus_client import REGISTRY

    v = REGISTRY.get_sample_value(
        "toru_plugin_connection_errors_total", {"plugin": "p", "kind": "bad_response"}
    )
    return v or 0.0


def test_out_of_order_odd_key_order_whitespace_and_int_request_id():
    async def scenario(rig: Rig) -> Any:
        for i in (1, 2, 3):
            rig.ask(i)
        reqs = await rig.requests(3)
        r1, r2, r3 = (m["request_id"] for m in reqs)
        await rig.send(
            frame(f'\n {{ "payload" :\t{{"body":"two","headers":{{}},"status":201}} ,'
                  f' "request_id" : "{r2}" , "type":"http"}}  ')
            + frame(f'{{"request_id":{int(r3)},"payload":{{"status":202,"body":"three"}}}}')
            + frame(f'{{"type":"http","request_id":"{r1}","payload":{{"status":200,"body":"one"}}}}')
        )  # fmt: skip
        return reqs, await rig.answered(1, 2, 3)

    (reqs, got), _ = relay(scenario)
    assert [m["payload"]["payload"]["path"] for m in reqs] == ["/x/1", "/x/2", "/x/3"]
    assert all(m["type"] == "http" and m["timestamp"].endswith("Z") for m in reqs)
    assert reply_result(got[1]) == {"status": 200, "body": "one"}
    assert reply_result(got[2]) == {"body": "two", "headers": {}, "status": 201}
    assert reply_result(got[3]) == {"status": 202, "body": "three"}


def test_nested_request_ids_in_bodies_do_not_match_other_requests():
    async def scenario(rig: Rig) -> Any:
        rig.ask(1)
        rig.ask(2)
        r1, r2 = (m["request_id"] for m in await rig.requests(2))
        decoy = {
            "type": "http",
            "payload": {
                "status": 200,
                "headers": {"request_id": r1},
                "body": json.dumps({"request_id": r1, "payload": {"status": 999}}),
                "nested": {"request_id": r1, "payload": {"request_id": r1}},
            },
            "request_id": r2,
        }
        await rig.send(encode(decoy))
        got = await rig.answered(2)
        first = 1 in got
        await rig.send(frame(f'{{"request_id":"{r1}","payload":{{"status":204}}}}'))
        return decoy, first, await rig.answered(1)

    (decoy, first_answered_early, got), _ = relay(scenario)
    assert not first_answered_early
    assert reply_result(got[2]) == decoy["payload"]
    assert reply_result(got[1]) == {"status": 204}


def test_escaped_and_non_ascii_strings_pass_through_both_ways():
    tricky = 'q"uote \\ back\\"slash } ] {"request_id":"1"} \u0000 \u2028 é 👋 </script>'

    async def scenario(rig: Rig) -> Any:
        rig.ask(1, body=tricky, headers={"x-h": tricky})
        (req,) = await rig.requests(1)
        rid = req["request_id"]
        raw = (
            b'{"request_id":"' + rid.encode() + b'","payload":{"status":200,'
            b'"body":"\\ud800 lone surrogate \\" \\\\ \\/ \\u00e9 \xc3\xa9",'
            b'"headers":{"k":"\\"}"}}}'
        )
        await rig.send(frame(raw))
        return req, await rig.answered(1)

    (req, got), _ = relay(scenario)
    inner = req["payload"]["payload"]
    assert inner["body"] == tricky and inner["headers"] == {"x-h": tricky}
    result = reply_result(got[1])
    assert result["body"] == '\ud800 lone surrogate " \\ / é é'
    assert result["headers"] == {"k": '"}'}


@pytest.mark.parametrize(
    "payload",
    [
        "[1,2]",
        '"text"',
        "null",
        "17",
        '{"status":"200"}',
        '{"status":99}',
        '{"status":600}',
        '{"status":true}',
        '{"status":200.0}',
        '{"status":null}',
        '{"headers":{"status":200}}',
        '{"headers":[]}',
        '{"body":7}',
        '{"body":"x","body_encoding":"gzip"}',
        '{"body":"not base64!","body_encoding":"base64"}',
        '{"payload":"nested but not an object"}',
        None,  # no payload key at all
    ],
)
def test_a_reply_the_validator_refuses_is_502_bad_response_with_the_reason(payload):
    async def scenario(rig: Rig) -> Any:
        before = bad_responses()
        rig.ask(1)
        (req,) = await rig.requests(1)
        rid = req["request_id"]
        body = f',"payload":{payload}' if payload is not None else ""
        await rig.send(frame(f'{{"status":200,"request_id":"{rid}"{body}}}'))
        got = await rig.answered(1)
        return got, bad_responses() - before, rig, rig.conn.closed

    (got, counted, rig, closed), _ = relay(scenario)
    err = result_or_error(got[1])
    assert isinstance(err, ToruError) and err.status == 502 and err.code == "bad_gateway"
    assert counted == 1
    assert len(rig.bad_replies) == 1 and rig.bad_replies[0].startswith("the reply's")
    assert rig.bad_replies[0] in err.message  # the client's 502 says the same reason
    assert not closed  # one bad reply is not a broken connection
    assert rig.stats.snapshot()["latency"] == []  # only valid replies are recorded


def test_a_reply_without_status_is_200_both_in_the_supervisor_and_the_worker_client():
    async def scenario(rig: Rig) -> Any:
        rig.ask(1)
        rig.ask(2, form=None)  # the older "result" form too
        r1, r2 = (m["request_id"] for m in await rig.requests(2))
        for rid in (r1, r2):
            await rig.send(frame(f'{{"request_id":"{rid}","payload":{{"body":"hi"}}}}'))
        return await rig.answered(1, 2)

    got, _ = relay(scenario)
    for rid in (1, 2):
        reply = validate_http_reply(reply_result(got[rid]))
        assert (reply.status, reply.body_bytes) == (200, b"hi")


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (HEADER.pack(MAX + 1), "maximum frame size"),
        (HEADER.pack(0xFFFFFFFF) + b"x" * 10, "maximum frame size"),
        (frame(b'{"request_id":"1","payload":{"status":200'), "not valid UTF-8 JSON"),
        (frame(b'{"request_id":"1","payload":{"status":200,"body":"\xff"}}'), "not valid"),
        (frame(b"[1,2,3]"), "not a JSON object"),
        (frame(b""), "not valid"),
    ],
)
def test_malformed_or_oversized_reply_frames_fail_every_pending_request_with_502(garbage, reason):
    async def scenario(rig: Rig) -> Any:
        for i in (1, 2, 3):
            rig.ask(i)
        reqs = await rig.requests(3)
        ok = reqs[2]["request_id"]  # answered in the same chunk, before the bad frame
        await rig.send(frame(f'{{"request_id":"{ok}","payload":{{"status":200}}}}') + garbage)
        return await rig.answered(1, 2, 3)

    got, lost = relay(scenario)
    assert reply_result(got[3]) == {"status": 200}
    for i in (1, 2):
        err = result_or_error(got[i])
        assert isinstance(err, ToruError) and err.status == 502, err
        assert reason in err.message
    assert lost and lost[0].startswith("protocol error")


def test_reply_that_outgrows_the_control_frame_limit_is_502_and_the_rest_still_flows():
    async def scenario(rig: Rig) -> Any:
        rig.ask(1)
        rig.ask(2)
        r1, r2 = (m["request_id"] for m in await rig.requests(2))
        big = '{"request_id":"%s","payload":{"status":200,"body":"%s"}}'
        raw = big % (r1, "x" * (MAX - len(big) - 10))
        assert len(raw) <= MAX  # fits the plugin's limit, not the control reply's
        await rig.send(frame(raw) + frame(big % (r2, "small")))
        return await rig.answered(1, 2)

    got, lost = relay(scenario)
    err = result_or_error(got[1])
    assert isinstance(err, ToruError) and err.status == 502 and "too large" in err.message
    assert reply_result(got[2])["body"] == "small"
    assert not lost


def test_deadline_gives_504_and_unusable_request_ids_are_ignored():
    async def scenario(rig: Rig) -> Any:
        rig.control.sup.http_timeout = 0.3  # fires: the plugin never answers request 1
        rig.ask(1)
        (req,) = await rig.requests(1)
        rid = req["request_id"]
        for bad_id in (f'["{rid}"]', f'{{"id":"{rid}"}}', "true", "null", f'"{rid}x"'):
            await rig.send(frame(f'{{"request_id":{bad_id},"payload":{{"status":200}}}}'))
        await rig.send(frame('{"payload":{"status":200}}'))  # no request_id at all
        return await rig.answered(1)

    got, lost = relay(scenario)
    err = result_or_error(got[1])
    assert isinstance(err, ToruError) and err.status == 504
    assert not lost


def test_default_reply_form_still_carries_the_payload_as_result():
    async def scenario(rig: Rig) -> Any:
        rig.ask(1, form=None)
        rig.ask(2, form="message")
        r1, r2 = (m["request_id"] for m in await rig.requests(2))
        await rig.send(
            frame(f'{{"payload":{{"status":200,"body":"a"}},"request_id":"{r1}"}}')
            + frame(f'{{"payload":{{"status":200,"body":"b"}},"request_id":"{r2}"}}')
        )
        return await rig.answered(1, 2)

    got, _ = relay(scenario)
    assert got[1] == {"id": 1, "ok": True, "result": {"status": 200, "body": "a"}}
    assert set(got[2]) == {"id", "ok", "message"} and got[2]["ok"] is True
    assert reply_result(got[2]) == {"status": 200, "body": "b"}


def test_spliced_reply_bytes_are_exactly_the_plugins_message():
    async def scenario(rig: Rig) -> Any:
        rig.ask(7)
        (req,) = await rig.requests(1)
        raw = b'{ "request_id" : "%s", "payload": {"status": 200, "x": [1, {"y": "}"}]} }' % (
            req["request_id"].encode()
        )
        await rig.send(frame(raw))
        await until(lambda: len(rig.out.data) > 0)
        return bytes(rig.out.data), raw

    (data, raw), _ = relay(scenario)
    (size,) = HEADER.unpack_from(data)
    assert size == len(data) - 4
    assert data[4:] == b'{"id":7,"ok":true,"message":' + raw + b"}"
    json.loads(data[4:])  # valid JSON for any reader, not just ujson


def test_reply_result_reads_both_forms_and_errors():
    assert reply_result({"id": 1, "ok": True, "result": {"a": 1}}) == {"a": 1}
    assert reply_result({"id": 1, "ok": True, "message": {"payload": {"status": 200}}}) == {
        "status": 200
    }
    assert reply_result({"id": 1, "ok": True, "message": [1]}) is None
    with pytest.raises(ToruError) as err:
        reply_result({"id": 1, "ok": False, "error": {"code": "x", "status": 404}})
    assert err.value.status == 404


def test_control_connections_close_from_either_side_without_loop_errors():
    """The client hanging up, and ``ControlServer.close()``, both go through the base's
    connection_lost/close (run_async fails on any exception the loop only logs)."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        sup = Supervisor.__new__(Supervisor)
        sup.config = SimpleNamespace(max_frame=MAX)
        server = ControlServer(sup, Path("/nonexistent/control.sock"))
        pairs = [socket.socketpair() for _ in range(2)]
        for mine, _ in pairs:
            await loop.create_unix_connection(lambda: ControlConnection(server), sock=mine)
        assert len(server.connections) == 2
        pairs[0][1].close()  # the worker hangs up
        await until(lambda: len(server.connections) == 1)
        (conn,) = server.connections
        await server.close()
        await until(lambda: conn.closed and not server.connections)
        pairs[1][1].close()
        return conn.close_reason

    assert run_async(main()) == "closed"


TRICKY_HEADERS = {"x-h": 'q"uote \\ } {"request_id":"1"} \u2028 é 👋', "accept": "*/*"}


@pytest.mark.parametrize("binary", [False, True], ids=["v1-plugin", "binary-plugin"])
@pytest.mark.parametrize("body", [b"", 'hé "}'.encode(), b"\xff\x00 not utf-8"])
def test_the_clients_http_frame_reaches_the_plugin_with_its_request_json_as_sent(binary, body):
    """The worker's form (``http_frame``): the request's JSON at the tail's start is relayed
    byte for byte; the body as the binary frame's tail, or spliced in as a JSON string."""
    sent = dumps({"method": "POST", "path": "/x?q=1", "headers": TRICKY_HEADERS})

    async def scenario(rig: Rig) -> Any:
        parts = http_frame("7", "/p", "POST", "/x?q=1", TRICKY_HEADERS, body, MAX)
        rig.control.data_received(b"".join(parts))
        raw = b""
        loop = asyncio.get_running_loop()
        while len(raw) < 4 or len(raw) < 4 + (HEADER.unpack_from(raw)[0] & 0x7FFFFFFF):
            raw += await loop.sock_recv(rig.plugin_sock, 65536)
        (req,) = rig.plugin_dec.feed(raw)
        await rig.send(encode({"request_id": req["request_id"], "payload": {"status": 201}}))
        return raw, req, await rig.answered("7")

    (raw, req, got), _ = relay(scenario, binary)
    inner = req["payload"]["payload"]
    assert (inner["method"], inner["path"], inner["headers"]) == ("POST", "/x?q=1", TRICKY_HEADERS)
    if binary:
        assert sent in raw and req[BODY] == body and "body" not in inner
    else:
        assert sent[:-1] in raw and BODY not in req
        if body == b"\xff\x00 not utf-8":
            assert inner["body_encoding"] == "base64"
        else:
            assert inner["body"] == body.decode() and "body_encoding" not in inner
    assert reply_result(got["7"]) == {"status": 201}


def test_an_empty_request_json_object_still_gets_its_body_and_bad_sizes_are_400():
    def op(rid: str, size: Any, tail: bytes) -> bytes:
        head = {"v": 1, "id": rid, "op": "http", "args": {"route": "/p", "request_json": size}}
        return b"".join(encode_binary(dumps(head), tail, MAX))

    async def scenario(rig: Rig) -> Any:
        rig.control.data_received(op("bad-size", 99, b"{}"))
        rig.control.data_received(op("bad-type", "2", b"{}"))
        rig.control.data_received(op("not-object", 3, b"[1]"))
        rig.control.data_received(op("ok", 2, b"{}body"))  # the connection still serves
        (req,) = await rig.requests(1)
        await rig.send(encode({"request_id": req["request_id"], "payload": {}}))
        return req, await rig.answered("bad-size", "bad-type", "not-object", "ok")

    (req, got), _ = relay(scenario)
    assert req["payload"]["payload"] == {"body": "body"}
    for rid in ("bad-size", "bad-type", "not-object"):
        err = result_or_error(got[rid])
        assert isinstance(err, ToruError) and err.status == 400 and "request_json" in err.message
    assert reply_result(got["ok"]) == {}
