"""The blocking channel (``toru_plugin_api.blocking.Channel``) over a real socketpair."""

from __future__ import annotations

import socket
import threading

import pytest

from tests import timing
from toru_plugin_api.blocking import Channel, connect_unix
from toru_plugin_api.codec import Decoder, ProtocolError, encode


def pair() -> tuple[Channel, socket.socket]:
    mine, peer = socket.socketpair()
    peer.settimeout(timing.WAIT)
    return Channel(mine), peer


def received(peer: socket.socket, n: int) -> list[dict]:
    dec, got = Decoder(), []
    while len(got) < n:
        got += dec.feed(peer.recv(65536))
    return got


def test_pipelined_replies_are_matched_by_id_and_strangers_dropped():
    ch, peer = pair()
    ids = [ch.next_id() for _ in range(3)]
    for rid in ids:
        ch.expect(rid)
    ch.send_bytes(b"".join(encode({"request_id": rid}) for rid in ids))
    assert [m["request_id"] for m in received(peer, 3)] == ids
    peer.sendall(
        encode({"request_id": "stranger"})
        + encode({"request_id": int(ids[2]), "n": 2})  # an integer id is its string
        + encode({"request_id": ids[0], "n": 0})
        + encode({"request_id": ids[1], "n": 1})
    )
    assert ch.reply(ids[1], timing.WAIT)["n"] == 1  # the others are kept on the way
    assert ch.reply(ids[0], timing.WAIT)["n"] == 0
    assert ch.reply(ids[2], timing.WAIT)["n"] == 2
    assert len(ch.pending) == 0


def test_a_timed_out_request_is_abandoned_and_its_late_reply_dropped():
    ch, peer = pair()
    first = ch.next_id()
    ch.expect(first)
    ch.send({"request_id": first})
    with pytest.raises(TimeoutError, match="no reply with request_id '1'"):
        ch.reply(first, 0.05)  # the peer never answers in time
    (req,) = received(peer, 1)
    peer.sendall(encode({"request_id": req["request_id"], "late": True}))
    reply_to = {}

    def answer() -> None:
        (msg,) = received(peer, 1)
        reply_to["id"] = msg["request_id"]
        peer.sendall(encode({"request_id": msg["request_id"], "late": False}))

    t = threading.Thread(target=answer)
    t.start()
    got = ch.request({"type": "http"}, timing.WAIT)
    t.join(timing.WAIT)
    assert got == {"request_id": reply_to["id"], "late": False}


def test_eof_and_bad_frames_are_errors_a_caller_can_tell_apart():
    ch, peer = pair()
    rid = ch.next_id()
    ch.expect(rid)
    peer.close()
    with pytest.raises(EOFError):
        ch.reply(rid, timing.WAIT)
    ch, peer = pair()
    rid = ch.next_id()
    ch.expect(rid)
    peer.sendall(encode({"request_id": rid, "before": True}) + b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match="maximum frame size"):
        ch.read(timing.WAIT)
    assert ch.read(timing.WAIT) == {"request_id": rid, "before": True}  # kept from before it


def test_connect_fails_at_once_on_a_missing_socket_and_works_on_a_listening_one(tmp_path):
    path = str(tmp_path / "p.sock")
    with pytest.raises(FileNotFoundError):
        connect_unix(path, timing.WAIT)
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen(1)
        ch = Channel.connect(path, timing.WAIT, id_field="id")
        peer, _ = srv.accept()
        with peer:
            peer.settimeout(timing.WAIT)
            rid = ch.next_id()
            ch.expect(rid)
            ch.send({"id": rid, "op": "ping"})
            (req,) = received(peer, 1)
            peer.sendall(encode({"id": req["id"], "ok": True}))
            assert ch.reply(rid, timing.WAIT) == {"id": rid, "ok": True}
        ch.close()
