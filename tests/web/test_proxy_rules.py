"""The fast request rules in toru/wsgi/proxy.py and http.py match the plain ones exactly.

``split_target``, ``forward_headers`` and ``client_info`` read the ASGI scope directly and
cache per-name rules (PERF). The reference versions below are the straightforward
implementations they replaced (over Falcon's ``req.headers``/``get_header``); both run over
thousands of generated requests and must agree on every one, 400s and 404s included.
"""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from urllib.parse import quote, unquote

import falcon.asgi
import pytest

from tests import timing
from tests.loops import run_async
from toru.errors import ToruError
from toru.wsgi import proxy
from toru.wsgi.http import ClientInfo, client_info, read_body

TRUSTED = frozenset({"127.0.0.1", "::1", "unix", "10.0.0.1"})


# --------------------------------------------------------------------------- reference


def ref_client_info(req: falcon.asgi.Request, trusted: frozenset[str]) -> tuple:
    client = req.scope.get("client")
    peer = client[0] if client else "unix"
    scheme = req.scope.get("scheme", "http")
    host = req.get_header("Host") or req.scope["server"][0]
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


def ref_split_target(req: falcon.asgi.Request) -> tuple[str, str]:
    raw = req.scope.get("raw_path", b"").decode("latin-1")
    raw_path = raw if raw.startswith("/") else quote(req.path, safe="/:@!$&'()*+,;=~-._")
    raw_qs = req.scope.get("query_string", b"").decode("latin-1")
    if not raw_path.startswith(proxy.PREFIX):
        raise LookupError("404")
    below = raw_path[len(proxy.PREFIX) :]
    route_seg, _, rest = below.partition("/")
    if not route_seg:
        raise LookupError("404")
    for seg in [route_seg, *rest.split("/")]:  # every segment (proxy.py skips most)
        if proxy.bad_segment(seg):  # pinned by its own examples below
            raise ValueError("400")
    path = "/" + rest
    if raw_qs:
        path += "?" + raw_qs
    return "/" + route_seg, path


def ref_forward_headers(req: falcon.asgi.Request, trusted: frozenset[str]) -> dict[str, str]:
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
            value = proxy.without_session_cookie(value)  # pinned by its own test below
            if not value:
                continue
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


async def _no_body() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


def asgi_request(
    path: str = "/",
    *,
    raw_path: bytes = b"",
    query_string: str = "",
    headers: dict[str, str] | None = None,
    client: str | None = "127.0.0.1",
    scheme: str = "http",
    method: str = "GET",
    receive=_no_body,
) -> falcon.asgi.Request:
    """A Falcon ASGI request over a scope shaped as gunicorn's asgi worker builds it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "server": ("127.0.0.1", 8080),
        "client": (client, 40000) if client else None,
    }
    return falcon.asgi.Request(scope, receive)


def _request(rnd: random.Random) -> falcon.asgi.Request:
    segs = [rnd.choice(SEGMENTS) for _ in range(rnd.randint(1, 4))]
    raw = proxy.PREFIX + "/".join(segs) if rnd.random() < 0.95 else "/api/other/x"
    qs = rnd.choice(["", "x=1&y=%2F", "a"])
    headers: dict[str, str] = {}
    if rnd.random() < 0.7:
        headers["Host"] = rnd.choice(["panel.local", "127.0.0.1:8080"])
    for name, value in rnd.sample(HEADERS, rnd.randint(0, 8)):
        headers[name] = value
    req = asgi_request(
        unquote(raw) or "/",
        raw_path=raw.encode() if rnd.random() < 0.8 else b"",
        query_string=qs,
        headers=headers,
        client=rnd.choice(PEERS),
        scheme="https" if rnd.random() < 0.2 else "http",
    )
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
        assert _outcome(proxy.split_target, req) == _outcome(ref_split_target, req), req.scope
        want = ref_forward_headers(req, TRUSTED)
        req.context.pop("client", None)
        got = proxy.forward_headers(req, TRUSTED)
        assert list(got.items()) == list(want.items()), req.scope
        req.context.pop("client", None)
        assert tuple(client_info(req, TRUSTED)) == ref_client_info(req, TRUSTED)


@pytest.mark.parametrize(
    ("cookie", "kept"),
    [
        ("toru_session=s; theme=dark", "theme=dark"),
        ("toru_session=s", ""),
        (" a=1 ;; toru_session = s ; b", "a=1; b"),
        ("theme=dark;lang=de", "theme=dark; lang=de"),
        ("toru_session_x=1; xtoru_session=2", "toru_session_x=1; xtoru_session=2"),
        ("TORU_SESSION=1", "TORU_SESSION=1"),  # cookie names are case-sensitive
        (";;", ""),
    ],
)
def test_the_session_cookie_never_reaches_a_plugin(cookie, kept):
    assert proxy.without_session_cookie(cookie) == kept


@pytest.mark.parametrize(
    ("seg", "bad"),
    [("json", False), ("a%20b", False), (".hidden", False), ("..x", False), ("x.js", False),
     ("caf%C3%A9", False), ("", False), (".", True), ("..", True), ("%2e", True),
     ("%2E%2e", True), ("%2f", True), ("a%2Fb", True), ("%5c", True), ("a\\b", True),
     ("%00", True), ("%25", True), ("%252e%252e", True), ("%zz", True), ("a%", True)],
)  # fmt: skip
def test_bad_segments(seg, bad):
    assert proxy.bad_segment(seg) is bad


def test_client_info_is_local():
    req = asgi_request(client="127.0.0.1")
    assert client_info(req, TRUSTED).is_local
    req = asgi_request(client="127.0.0.1", headers={"X-Forwarded-For": "1.2.3.4"})
    assert not client_info(req, TRUSTED).is_local
    assert isinstance(client_info(req, TRUSTED), ClientInfo)
    assert client_info(asgi_request(client=None), TRUSTED).peer == "unix"


def test_rule_caches_are_bounded():
    for i in range(proxy._RULES_MAX + 10):
        req = asgi_request(headers={f"X-Junk-{i}": "1"})
        assert proxy.forward_headers(req, TRUSTED)[f"X-Junk-{i}"] == "1"
    assert len(proxy._RULES) <= proxy._RULES_MAX
    assert len(proxy._PLANS) <= proxy._PLANS_MAX


def test_duplicate_headers_are_joined():
    scope_headers = [(b"x-a", b"1"), (b"cookie", b"a=1"), (b"x-a", b"2"), (b"cookie", b"b=2")]
    req = asgi_request()
    req.scope["headers"] = scope_headers
    got = proxy.forward_headers(req, TRUSTED)
    assert got["X-A"] == "1, 2" and got["Cookie"] == "a=1; b=2"


def _body_request(chunks: list[bytes], headers: dict[str, str], stall: float = 0.0):
    events = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or stall > 0}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict:
        if events:
            return events.pop(0)
        await asyncio.sleep(stall)  # a client that stopped sending
        return {"type": "http.disconnect"}

    return asgi_request(method="POST", headers=headers, receive=receive)


def _read(req, limit: int, timeout: float = timing.HTTP):
    return run_async(read_body(req, limit, timeout))


def test_read_body_framings_limit_and_deadline():
    """No framing is no body; Content-Length and chunked bodies are read to their end; the
    limit is checked before reading and while a chunked body grows (413); a body shorter
    than its Content-Length is 400; one that stalls past the deadline is 408."""
    parts = [b"chunked", b"-decoded"]
    assert _read(_body_request(parts, {}), 100) == b""
    assert _read(_body_request(parts, {"Content-Length": "0"}), 100) == b""
    assert _read(_body_request(parts, {"Content-Length": "15"}), 100) == b"chunked-decoded"
    assert _read(_body_request(parts, {"Transfer-Encoding": "chunked"}), 100) == b"chunked-decoded"
    with pytest.raises(ToruError) as exc:
        _read(_body_request(parts, {"Transfer-Encoding": "chunked"}), 10)
    assert exc.value.status == 413
    with pytest.raises(ToruError) as exc:
        _read(_body_request(parts, {"Content-Length": "15"}), 5)
    assert exc.value.status == 413
    with pytest.raises(ToruError) as exc:
        _read(_body_request([b"short"], {"Content-Length": "15"}), 100)
    assert exc.value.status == 400
    with pytest.raises(ToruError) as exc:
        stalled = _body_request([b"short"], {"Content-Length": "15"}, stall=timing.scaled(30))
        _read(stalled, 100, 0.2)
    assert exc.value.status == 408
