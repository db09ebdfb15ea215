"""The fast request rules in toru/wsgi/proxy.py and http.py match the plain ones exactly.

``split_target``, ``forward_headers`` and ``client_info`` read the WSGI environ directly and
cache per-name rules (PERF). The reference versions below are the straightforward
implementations they replaced (over Falcon's ``req.headers``/``get_header``); both run over
thousands of generated requests and must agree on every one, 400s and 404s included.
"""

from __future__ import annotations

import io
import random
from types import SimpleNamespace
from urllib.parse import quote, unquote

import falcon
import falcon.testing as ft
import pytest

from toru.errors import ToruError
from toru.wsgi import proxy
from toru.wsgi.http import ClientInfo, client_info, read_body

TRUSTED = frozenset({"127.0.0.1", "::1", "unix", "10.0.0.1"})


# --------------------------------------------------------------------------- reference


def ref_client_info(req: falcon.Request, trusted: frozenset[str]) -> tuple:
    env = req.env
    peer = env.get("REMOTE_ADDR") or "unix"
    scheme = env.get("wsgi.url_scheme", "http")
    host = req.get_header("Host") or env.get("SERVER_NAME", "localhost")
    xff = req.get_header("X-Forwarded-For")
    if peer in trusted:
        chain = [p.strip() for p in xff.split(",") if p.strip()] if xff else []
        ip = peer
        for hop in reversed(chain):
            ip = hop
            if hop not in trusted:
                break
        if peer != "unix":
            chain.append(peer)
        proto = (req.get_header("X-Forwarded-Proto") or "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
        fhost = (req.get_header("X-Forwarded-Host") or "").split(",")[0].strip()
        return (peer, ip, scheme, fhost or host, ", ".join(chain), bool(xff) or peer == "unix")
    return (peer, peer, scheme, host, peer, False)


def _ref_bad_segment(seg: str) -> bool:
    decoded = unquote(seg)
    return (
        decoded in (".", "..")
        or "/" in decoded
        or "\\" in decoded
        or "\x00" in decoded
        or "%" in decoded
    )


def ref_split_target(req: falcon.Request) -> tuple[str, str]:
    raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI") or ""
    if raw.startswith("/"):
        raw_path = raw.partition("?")[0].partition("#")[0]
    else:
        raw_path = quote(req.path, safe="/:@!$&'()*+,;=~-._")
    raw_qs = req.env.get("QUERY_STRING", "")
    if not raw_path.startswith(proxy.PREFIX):
        raise LookupError("404")
    below = raw_path[len(proxy.PREFIX) :]
    route_seg, _, rest = below.partition("/")
    if not route_seg:
        raise LookupError("404")
    for seg in [route_seg, *rest.split("/")]:
        if _ref_bad_segment(seg):
            raise ValueError("400")
    path = "/" + rest
    if raw_qs:
        path += "?" + raw_qs
    return "/" + route_seg, path


def ref_forward_headers(req: falcon.Request, trusted: frozenset[str]) -> dict[str, str]:
    connection_named = {
        t.strip().lower() for t in (req.get_header("Connection") or "").split(",") if t.strip()
    }
    out: dict[str, str] = {}
    for name, value in req.headers.items():
        lname = name.lower()
        if (
            lname in proxy.HOP_BY_HOP
            or lname in proxy.DROP_REQUEST
            or lname in connection_named
            or lname.startswith("x-toru-")
            or lname.startswith("proxy-")
        ):
            continue
        if lname == "cookie":
            kept = [
                c.strip()
                for c in value.split(";")
                if c.strip() and c.strip().split("=", 1)[0].strip() != "toru_session"
            ]
            if not kept:
                continue
            value = "; ".join(kept)
        out["-".join(p.capitalize() for p in lname.split("-"))] = value
    _, _, scheme, host, fwd, _ = ref_client_info(req, trusted)
    if fwd:
        out["X-Forwarded-For"] = fwd
    out["X-Forwarded-Proto"] = scheme
    out["X-Forwarded-Host"] = host
    h = req.get_header("Host")
    if h:
        out["Host"] = h
    user = req.context.get("user")
    if user is not None:
        out["X-Toru-User"] = user.username
        out["X-Toru-Role"] = user.role
    return out


# --------------------------------------------------------------------------- generators

SEGMENTS = [
    "json", "a b", "a%20b", ".", "..", ".hidden", "..x", "%2e", "%2E%2e", "%2f", "a%2Fb",
    "%5c", "a\\b", "%00", "%25", "%252e%252e", "x.js", "", "caf%C3%A9", "~u", "%zz", "a%",
]  # fmt: skip
HEADERS = [
    ("X-Custom", "yes"), ("Connection", "keep-alive, X-Secret"), ("Connection", "close"),
    ("X-Secret", "s"), ("Keep-Alive", "5"), ("TE", "trailers"), ("Upgrade", "h2c"),
    ("Proxy-Authorization", "x"), ("Proxy-Foo", "y"), ("Authorization", "Bearer toru_x"),
    ("X-CSRF-Token", "c"), ("X-Forwarded-For", "203.0.113.9, 10.0.0.1"),
    ("X-Forwarded-For", " , "), ("X-Forwarded-Proto", "HTTPS, http"),
    ("X-Forwarded-Proto", "gopher"), ("X-Forwarded-Host", "panel.example, other"),
    ("X-Forwarded-Host", " "), ("X-Forwarded-Port", "443"), ("X-Real-IP", "1.2.3.4"),
    ("Forwarded", "for=1.2.3.4"), ("X-Toru-User", "root"), ("X-Toru-Role", "admin"),
    ("Cookie", "toru_session=s; theme=dark"), ("Cookie", "toru_session=s"),
    ("Cookie", " a=1 ;; toru_session = s ; b"), ("Content-Type", "application/json"),
    ("Accept", "*/*"), ("User-Agent", "wrk"), ("Transfer-Encoding", "chunked"),
    ("Trailer", "x"), ("X-Secret-Two", "z"), ("Connection", "x-secret-two,  ,Upgrade"),
    ("Accept-Language", "de"), ("X-Multi-Word-Name", "v"),
]  # fmt: skip
PEERS = ["127.0.0.1", "10.0.0.1", "198.51.100.7", "::1", None]


def _request(rnd: random.Random) -> falcon.Request:
    segs = [rnd.choice(SEGMENTS) for _ in range(rnd.randint(1, 4))]
    raw = proxy.PREFIX + "/".join(segs) if rnd.random() < 0.95 else "/api/other/x"
    qs = rnd.choice(["", "x=1&y=%2F", "a"])
    headers: dict[str, str] = {}
    for name, value in rnd.sample(HEADERS, rnd.randint(0, 8)):
        headers[name] = value
    env = ft.create_environ(
        path=unquote(raw) or "/",
        query_string=qs,
        headers=headers,
        host=rnd.choice(["panel.local", "127.0.0.1:8080"]),
    )
    peer = rnd.choice(PEERS)
    if peer is None:
        env.pop("REMOTE_ADDR", None)
    else:
        env["REMOTE_ADDR"] = peer
    if rnd.random() < 0.8:
        env["RAW_URI"] = raw + ("?" + qs if qs else "")
    if rnd.random() < 0.3:
        env.pop("HTTP_HOST", None)
    if rnd.random() < 0.2:
        env["wsgi.url_scheme"] = "https"
    req = falcon.Request(env)
    if rnd.random() < 0.8:
        req.context.user = SimpleNamespace(username="alice", role="user")
    return req


def _outcome(fn, req):
    try:
        return fn(req)
    except (ToruError, LookupError, ValueError) as exc:
        return getattr(exc, "status", None) or {"404": 404, "400": 400}[str(exc)]


@pytest.mark.parametrize("seed", range(4))
def test_fast_rules_match_the_reference(seed):
    rnd = random.Random(seed)
    for _ in range(1500):
        req = _request(rnd)
        assert _outcome(proxy.split_target, req) == _outcome(ref_split_target, req), req.env
        want = ref_forward_headers(req, TRUSTED)
        req.context.pop("client", None)
        got = proxy.forward_headers(req, TRUSTED)
        assert list(got.items()) == list(want.items()), req.env
        req.context.pop("client", None)
        assert tuple(client_info(req, TRUSTED)) == ref_client_info(req, TRUSTED)


def test_client_info_is_local():
    req = falcon.Request(ft.create_environ(remote_addr="127.0.0.1"))
    assert client_info(req, TRUSTED).is_local
    req = falcon.Request(ft.create_environ(remote_addr="127.0.0.1", headers={"X-Forwarded-For": "1.2.3.4"}))  # fmt: skip
    assert not client_info(req, TRUSTED).is_local
    assert isinstance(client_info(req, TRUSTED), ClientInfo)


def test_rule_caches_are_bounded():
    for i in range(proxy._RULES_MAX + 10):
        req = falcon.Request(ft.create_environ(headers={f"X-Junk-{i}": "1"}))
        assert proxy.forward_headers(req, TRUSTED)[f"X-Junk-{i}"] == "1"
    assert len(proxy._RULES) <= proxy._RULES_MAX
    assert len(proxy._PLANS) <= proxy._PLANS_MAX


def test_read_body_fast_path_matches_falcon_stream():
    """The no-body shortcut gives what Falcon's bounded stream gives, for every framing
    with a Content-Length; a chunked body without one is read from ``wsgi.input`` itself
    (Falcon's stream, bounded by Content-Length, would read it as empty)."""

    def req(**env):
        e = ft.create_environ(method="POST")
        e.pop("CONTENT_LENGTH", None)
        e["wsgi.input"] = io.BytesIO(b"chunked-decoded")
        e.update(env)
        return falcon.Request(e)

    for env in (
        {},
        {"CONTENT_LENGTH": ""},
        {"CONTENT_LENGTH": "0"},
        {"CONTENT_LENGTH": "7"},
        {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "7"},
    ):
        want = req(**env).bounded_stream.read(101)
        assert read_body(req(**env), 100) == want, env
    assert read_body(req(HTTP_TRANSFER_ENCODING="chunked"), 100) == b"chunked-decoded"
    with pytest.raises(ToruError):
        read_body(req(HTTP_TRANSFER_ENCODING="chunked"), 10)
    assert read_body(req(CONTENT_LENGTH="7"), 100) == b"chunked"
    with pytest.raises(ToruError):
        read_body(req(CONTENT_LENGTH="7"), 5)
