"""The framing codec and the message parsers: round trips, fragmentation, hostile input."""

from __future__ import annotations

import json
import socket
import struct
import tracemalloc

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from toru_plugin_api.codec import (
    BIG_FRAME,
    BINARY_FLAG,
    BODY,
    HEAD_MAX,
    HEADER,
    Decoder,
    FrameReader,
    FrameTooLarge,
    ProtocolError,
    encode,
    encode_binary,
    encode_payload,
    frame_body,
    write_frame,
)
from toru_plugin_api.messages import (
    HttpRequest,
    HttpResponse,
    KvOp,
    PluginError,
    http_request_message,
    http_response_message,
    kv_request_message,
    kv_response_message,
    parse_http_request,
    parse_kv_op,
    parse_kv_result,
    parse_message,
    validate_http_reply,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@given(st.lists(json_objects, min_size=1, max_size=4), st.integers(1, 64))
@settings(max_examples=60, deadline=None)
def test_round_trip_in_arbitrary_chunks(msgs, chunk):
    stream = b"".join(encode(m) for m in msgs)
    dec = Decoder()
    out = []
    for i in range(0, len(stream), chunk):
        out.extend(dec.feed(stream[i : i + chunk]))
    assert out == msgs
    assert dec.buffered == 0


def test_coalesced_frames_in_one_chunk():
    msgs = [{"n": i, "s": "é" * i} for i in range(50)]
    assert Decoder().feed(b"".join(encode(m) for m in msgs)) == msgs


def test_partial_header_and_body_wait_for_more():
    frame = encode({"hello": "world"})
    dec = Decoder()
    assert dec.feed(frame[:2]) == []
    assert dec.feed(frame[2:7]) == []
    assert dec.buffered == 7
    assert dec.feed(frame[7:]) == [{"hello": "world"}]


def test_oversized_length_prefix_rejected_without_allocation():
    dec = Decoder(max_frame=16 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLarge, match="exceeds the maximum"):
            dec.feed(HEADER.pack(0xFFFFFFFF) + b"{}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # a 4 GB claim cost well under a megabyte
    with pytest.raises(FrameTooLarge):  # the stream cannot be resynchronized
        dec.feed(encode({"ok": 1}))


def test_oversized_frame_refused_on_encode():
    with pytest.raises(FrameTooLarge):
        encode_payload(b"x" * 101, max_frame=100)


def test_messages_before_a_bad_frame_are_kept():
    dec = Decoder()
    with pytest.raises(ProtocolError) as info:
        dec.feed(encode({"a": 1}) + encode_payload(b"not json") + encode({"b": 2}))
    assert info.value.decoded == [{"a": 1}]
    assert dec.feed(b"") == [{"b": 2}]  # the bad frame is skipped, the rest survives


@given(st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_arbitrary_payload_bytes_give_protocol_error_or_an_object(payload):
    try:
        out = Decoder().feed(encode_payload(payload))
    except ProtocolError:
        return
    assert len(out) == 1 and isinstance(out[0], dict)


@given(st.binary(min_size=1, max_size=32).filter(lambda b: not _is_utf8(b)))
@example(b"\xed\xa0\x80")  # an encoded surrogate: ujson alone accepted it
@settings(max_examples=100, deadline=None)
def test_invalid_utf8_is_a_protocol_error(junk):
    with pytest.raises(ProtocolError):
        Decoder().feed(encode_payload(b'{"k": "' + junk + b'"}'))


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"42", b"null", b"{", b"{'a': 1}", b""])
def test_non_object_or_invalid_json_is_a_protocol_error(payload):
    with pytest.raises(ProtocolError):
        Decoder().feed(encode_payload(payload))


def test_blocking_reader_over_a_socketpair_and_eof_inside_a_frame():
    a, b = socket.socketpair()
    with a, b:
        write_frame(a, {"x": 1})
        a.sendall(encode({"y": 2})[:5])
        a.shutdown(socket.SHUT_WR)
        r = FrameReader(b)
        assert r.read() == {"x": 1}
        with pytest.raises(ProtocolError, match="middle of a frame"):
            r.read()


# ------------------------------------------------------------------ message parsers


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_parsers_raise_only_protocol_error(value):
    for parse in (
        parse_message,
        parse_http_request,
        validate_http_reply,
        parse_kv_op,
        parse_kv_result,
    ):
        try:
            parse(value)
        except ProtocolError:
            pass
        except Exception as exc:  # PluginError is a legitimate answer of parse_kv_result
            assert parse is parse_kv_result and isinstance(exc, PluginError), (parse, value, exc)


@given(json_objects)
@settings(max_examples=100, deadline=None)
def test_http_payload_fields_are_type_checked(obj):
    for wrap in (lambda p: p, lambda p: {"payload": p}):
        try:
            req = parse_http_request(wrap(obj))
        except ProtocolError:
            continue
        assert isinstance(req.method, str) and req.path.startswith("/")
        assert isinstance(req.body, bytes)


def test_original_nesting_and_flat_form_both_parse():
    inner = {"method": "get", "path": "x?a=1", "headers": {"A": "b"}, "body": "hi"}
    for payload in ({"payload": inner}, inner):
        req = parse_http_request(payload)
        assert (req.method, req.path, req.route_path, req.query, req.body) == (
            "GET",
            "/x?a=1",
            "/x",
            {"a": "1"},
            b"hi",
        )


def test_binary_bodies_travel_base64_both_ways():
    blob = bytes(range(256))
    msg = http_request_message("r1", HttpRequest("POST", "/b", {}, blob))
    wire = json.loads(encode(msg)[4:])
    assert wire["payload"]["payload"]["body_encoding"] == "base64"
    assert parse_http_request(wire["payload"]).body == blob
    reply = json.loads(encode(http_response_message("r1", HttpResponse(200, {}, blob)))[4:])
    assert reply["payload"]["body_encoding"] == "base64"
    assert validate_http_reply(reply["payload"]).body == blob


def test_kv_messages_round_trip():
    wire = json.loads(encode(kv_request_message("k1", KvOp("set", "a", "1")))[4:])
    assert wire["payload"] == {"payload": {"action": "set", "key": "a", "value": "1"}}
    assert parse_kv_op(wire["payload"]) == KvOp("set", "a", "1")
    assert parse_kv_result(kv_response_message("k1", "v")["payload"]) == "v"
    assert parse_kv_result(kv_response_message("k1", ["a", "b"])["payload"]) == ["a", "b"]
    with pytest.raises(ProtocolError):
        parse_kv_op({"payload": {"action": "list"}})  # list only on the plugin->host channel


def test_header_is_big_endian_length():
    frame = encode({"a": 1})
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4


@given(st.lists(st.binary(max_size=40), max_size=6))
@settings(max_examples=200, deadline=None)
def test_arbitrary_byte_streams_raise_only_protocol_error(chunks):
    dec = Decoder(max_frame=1024)
    for chunk in chunks:
        try:
            for msg in dec.feed(chunk):
                assert isinstance(msg, dict)
        except ProtocolError:
            pass


def test_now_iso_is_iso_utc_with_milliseconds_across_second_boundaries(monkeypatch):
    import datetime
    import time

    from toru_plugin_api import messages

    for t in (1764072000.0, 1764072000.9994, 1764072000.9996, 1764072001.0004, 1764072059.999):
        monkeypatch.setattr(time, "time", lambda t=t: t)
        want = datetime.datetime.fromtimestamp(int(t * 1000) / 1000, datetime.UTC)
        expect = want.strftime("%Y-%m-%dT%H:%M:%S.") + f"{want.microsecond // 1000:03d}Z"
        assert messages.now_iso_bytes() == expect.encode()
        assert messages.now_iso() == expect


# --------------------------------------------------------------------------- binary frames


def _binary_stream() -> tuple[bytes, list[tuple[dict, bytes | None]]]:
    """Text and binary frames, small and big (over ``BIG_FRAME``), back to back."""
    frames = [
        ({"type": "http", "request_id": "1"}, b"\xff\x00small"),
        ({"type": "http", "request_id": "2"}, None),
        ({"type": "http", "request_id": "3"}, bytes(range(256)) * (BIG_FRAME // 256 + 7)),
        ({"type": "http", "request_id": "4"}, b""),
    ]
    data = b"".join(encode(m, body=b) for m, b in frames)
    return data, frames


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536, BIG_FRAME + 3, 10**9])
@pytest.mark.parametrize("parse", [True, False])
def test_binary_frames_round_trip_in_any_chunking(chunk, parse):
    data, frames = _binary_stream()
    d = Decoder(parse=parse)
    out = []
    for i in range(0, len(data), chunk):
        out.extend(d.feed(data[i : i + chunk]))
    assert d.buffered == 0
    assert len(out) == len(frames)
    for got, (msg, body) in zip(out, frames, strict=True):
        if parse:
            assert frame_body(got) == body
            got = {k: v for k, v in got.items() if k != BODY}
            assert got == msg
        elif body is None:
            assert json.loads(got) == msg
        else:
            head, raw = got
            assert (json.loads(head), bytes(raw)) == (msg, body)


def test_a_big_frame_received_into_its_own_buffer():
    """``big_view``/``filled``: what a BufferedProtocol reader does. The body is received
    straight into the ``bytes`` it is handed on as (``fresh_bytes``): no copy, no view."""
    data, frames = _binary_stream()
    d = Decoder()
    out = d.feed(data[:100_000])  # frames 1 and 2, and the start of the big frame 3
    assert [m["request_id"] for m in out] == ["1", "2"]
    view = d.big_view()
    assert view is not None
    rest = memoryview(data)[100_000:]
    view[: len(view)] = rest[: len(view)]
    (big,) = d.filled(len(view))
    assert type(frame_body(big)) is bytes and frame_body(big) == frames[2][1]
    assert d.big_view() is None
    (last,) = d.feed(bytes(rest[len(view) :]))
    assert last["request_id"] == "4" and frame_body(last) == b""


@pytest.mark.parametrize("split", [1, 5, 8, 30, 40])
def test_a_big_binary_body_is_received_into_bytes_of_its_own(split):
    """Whatever part of its JSON the first read holds, a big binary frame's body ends up as
    one ``bytes`` with exactly its content; until then the frame counts as buffered (an
    EOF there is one inside a frame)."""
    body = bytes(range(256)) * (BIG_FRAME // 256 + 3)
    data = encode({"type": "http", "request_id": "9"}, body=body) + encode({"type": "x"})
    head_end = 8 + len(b'{"type":"http","request_id":"9"}')
    d = Decoder()
    assert d.feed(data[:split]) == []
    assert d.feed(data[split:head_end]) == [] and d.buffered == head_end
    out = d.feed(data[head_end : head_end + 70_000])
    view = d.big_view()  # the rest of the body but 10 bytes in place, those 10 by feed
    pos = head_end + 70_000
    view[: len(view) - 10] = data[pos : pos + len(view) - 10]
    out += d.filled(len(view) - 10)
    out += d.feed(data[pos + len(view) - 10 :])
    assert [m["type"] for m in out] == ["http", "x"] and d.buffered == 0
    assert type(frame_body(out[0])) is bytes and frame_body(out[0]) == body


def test_big_frames_reuse_a_buffer_only_once_no_body_points_into_it():
    """A body handed on as a view of its buffer stays intact while it is held; once it is
    dropped, the next big frame is received into the same buffer (no fresh zero-fill)."""

    def frames(fill: int) -> bytes:  # a JSON part too long for a body of its own bytes
        msg = {"type": "http", "pad": "p" * HEAD_MAX}
        return encode(msg, body=bytes([fill]) * (BIG_FRAME + 100))

    def receive(d: Decoder, data: bytes) -> memoryview:
        out = d.feed(data[:100_000])  # the start, then the rest in place (BufferedProtocol)
        view = d.big_view()
        view[:] = data[100_000:]
        (msg,) = out + d.filled(len(view))
        return frame_body(msg)

    d = Decoder()
    first = receive(d, frames(1))
    second = receive(d, frames(2))  # the first body is alive: a buffer of its own
    assert first.obj is not second.obj
    assert set(first) == {1} and set(second) == {2}
    kept = first.obj
    del first
    third = receive(d, frames(3))
    assert third.obj is kept and set(third) == {3} and set(second) == {2}
    copied = bytes(third)  # a consumer that copies and drops the view frees it too
    del third
    assert receive(d, frames(4)).obj is kept and set(copied) == {3}


@pytest.mark.parametrize("big", [False, True])
def test_a_binary_frame_whose_json_length_exceeds_it_is_a_protocol_error(big):
    body = b"x" * (BIG_FRAME + 10 if big else 10)
    head = b'{"type":"http"}'
    size = 4 + len(head) + len(body)
    lie = struct.pack(">II", size | BINARY_FLAG, len(head) + len(body) + 1) + head + body
    good = encode({"type": "http", "request_id": "ok"})
    stream = good + lie + good
    d = Decoder()
    seen = []
    with pytest.raises(ProtocolError, match=r"declares a \d+-byte JSON header") as err:
        for i in range(0, len(stream), 65536):
            seen.extend(d.feed(stream[i : i + 65536]))
    assert [m["request_id"] for m in seen + err.value.decoded] == ["ok"]
    with pytest.raises(ProtocolError, match="JSON header"):  # alone in a read: the fast path
        Decoder().feed(lie)


def test_a_body_in_parts_is_framed_as_their_concatenation_without_joining():
    """A request body as the server handed it over (a list of chunks) is one binary frame."""
    parts = [b"\xff" * 70_000, bytearray(b"\x00mid"), memoryview(b"tail\xfe")]
    frame = encode_binary(b'{"type":"http"}', parts)
    assert all(a is b for a, b in zip(frame[2:], parts, strict=True))  # not copied
    joined = b"".join(frame)
    assert joined == encode({"type": "http"}, body=b"".join(parts))
    (msg,) = Decoder().feed(joined)
    assert frame_body(msg) == b"".join(parts)
    assert encode_binary(b"{}", [])[0] == encode_binary(b"{}", b"")[0]
    with pytest.raises(FrameTooLarge):
        encode_binary(b"{}", [b"x" * 600, b"y" * 600], max_frame=1024)


def test_a_binary_frame_over_the_maximum_is_refused_before_reading():
    d = Decoder(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        d.feed(struct.pack(">II", 2048 | BINARY_FLAG, 10))
    with pytest.raises(FrameTooLarge):
        encode({"a": 1}, max_frame=1024, body=b"x" * 2048)


def test_binary_http_messages_parse_with_their_raw_body():
    req = HttpRequest("POST", "/up", {"Content-Type": "application/octet-stream"}, b"\xff\xfe")
    msg = http_request_message("r1", req, binary=True)
    assert "body" not in msg["payload"]["payload"]
    (got,) = Decoder().feed(encode(msg, body=req.body))
    parsed = parse_http_request(got["payload"], frame_body(got))
    assert (parsed.body, parsed.binary) == (b"\xff\xfe", True)
    with pytest.raises(ProtocolError, match="absent in a binary frame"):
        parse_http_request({"payload": {"method": "GET", "path": "/", "body": "x"}}, b"")
    reply = http_response_message("r1", HttpResponse(201, {}, b"\x80"), binary=True)
    assert validate_http_reply(reply["payload"], b"\x80").body == b"\x80"
    with pytest.raises(ProtocolError, match="must not also carry a JSON body"):
        validate_http_reply({"status": 200, "body": "x"}, b"\x80")


def test_a_text_frame_cannot_fake_a_binary_body():
    (msg,) = Decoder().feed(encode({"type": "http", BODY: "not bytes"}))
    assert frame_body(msg) is None
