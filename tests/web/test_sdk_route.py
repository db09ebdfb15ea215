"""An SDK (multi-connection) plugin's route against a real ``toru serve``: every request goes
worker -> supervisor -> plugin (there is no direct channel), so the supervisor sees each
one at once, decides routing in every worker, and owns crashes and timeouts.
"""

from __future__ import annotations

import time

from tests import timing
from tests.servers import ToruServer
from tests.web.procs import poll
from tests.web.webtest_plugin import install

ENV = {"TORU_SHUTDOWN_GRACE": "2", "TORU_RESTART_BACKOFF": "0.5"}


def _server(home, example_plugins, workers=2, **env):
    install(home / "plugins")
    return ToruServer(
        home,
        plugins=[example_plugins["raw-python"]],
        enable=["web-test", "raw-python"],
        workers=workers,
        env={**ENV, **env},
    )


def _stats_count(s, cookie, plugin):
    status, body = s.json("GET", f"/api/plugins/{plugin}/stats", cookie=cookie)
    assert status == 200, body
    return sum(b["count"] for b in body["latency"])


def test_stats_count_every_request_at_once(short_home, example_plugins):
    """The supervisor relays every request, so its per-plugin stats include each one as soon
    as it is answered (no report a second later, nothing lost when a worker stops)."""
    with _server(short_home, example_plugins) as s:
        cookie, _ = s.login()
        before = _stats_count(s, cookie, "web-test")
        for i in range(10):
            status, _, body = s.request(
                "GET", f"/api/plugins/route/webtest/slow?id=x{i}", cookie=cookie
            )
            assert status == 200 and f'"x{i}"' in body.decode(), (status, body)
        assert _stats_count(s, cookie, "web-test") == before + 10


def test_disable_is_seen_by_every_worker_at_once(short_home, example_plugins):
    """A disabled plugin's route is 404 on the next request in every worker; enabled again,
    it answers again."""
    with _server(short_home, example_plugins) as s:
        cookie, csrf = s.login()
        path = "/api/plugins/route/webtest/pid"
        assert s.request("GET", path, cookie=cookie)[0] == 200
        status, body = s.json("POST", "/api/plugins/web-test/disable", {}, cookie=cookie, csrf=csrf)
        assert status == 200, body
        for _ in range(8):  # both workers
            assert s.request("GET", path, cookie=cookie)[0] == 404
        status, body = s.json("POST", "/api/plugins/web-test/enable", {}, cookie=cookie, csrf=csrf)
        assert status == 200, body
        assert poll(lambda: s.request("GET", path, cookie=cookie)[0] == 200, timing.WAIT)


def test_crash_restart_and_timeout(short_home, example_plugins):
    """A plugin that dies mid-request is 502 and the restarted one answers; a hung request is
    504 after http_timeout, the plugin keeps answering, and a ``timeout`` event is recorded."""
    timeout = timing.scaled(2)
    with _server(short_home, example_plugins, TORU_HTTP_TIMEOUT=str(timeout)) as s:
        cookie, csrf = s.login()
        status, _, body = s.request("GET", "/api/plugins/route/webtest/pid", cookie=cookie)
        assert status == 200
        old_pid = int(body.decode().split(":")[1].strip(" }"))

        status, _, _ = s.request(
            "POST", "/api/plugins/route/webtest/crash", cookie=cookie, csrf=csrf
        )
        assert status == 502

        def new_pid():
            st, _, b = s.request("GET", "/api/plugins/route/webtest/pid", cookie=cookie)
            return st == 200 and int(b.decode().split(":")[1].strip(" }")) != old_pid

        assert poll(new_pid, timing.WAIT)
        for _ in range(6):  # every worker reaches the new process
            assert s.request("GET", "/api/plugins/route/webtest/pid", cookie=cookie)[0] == 200

        t0 = time.monotonic()
        status, _, body = s.request(
            "GET", "/api/plugins/route/webtest/hang", cookie=cookie, timeout=timing.WAIT
        )
        assert status == 504, body
        assert time.monotonic() - t0 >= timeout * 0.75
        assert s.request("GET", "/api/plugins/route/webtest/slow?id=a", cookie=cookie)[0] == 200

        def timeout_event():
            st, events = s.json("GET", "/api/plugins/web-test/events?limit=20", cookie=cookie)
            return st == 200 and any(e["event_type"] == "timeout" for e in events)

        assert poll(timeout_event, timing.WAIT)
