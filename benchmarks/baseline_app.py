"""Scenario (a), the baseline: a tiny Falcon app answering the benchmark plugin's bodies
directly, served by the same gunicorn configuration as ``toru serve``, no proxying.

It mounts the same paths as the proxied scenario (``/api/plugins/route/bench-sdk/...``) so
request lines are byte-for-byte the same size.
"""

from __future__ import annotations

import falcon

from benchmarks.plugins.bench_sdk import MAX_SIZE, SMALL, body_of_size

PREFIX = "/api/plugins/route/bench-sdk"


class JsonResource:
    """``GET /json``: the small JSON body."""

    def __init__(self) -> None:
        self.body = body_of_size(SMALL)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self.body


class SizedResource:
    """``GET /size/{n}``: a JSON body of exactly n bytes."""

    def __init__(self) -> None:
        self.cache: dict[int, bytes] = {}

    def on_get(self, req: falcon.Request, resp: falcon.Response, n: int) -> None:
        if not 0 <= n <= MAX_SIZE:
            raise falcon.HTTPBadRequest(title="size out of range")
        body = self.cache.get(n)
        if body is None:
            body = self.cache[n] = body_of_size(n)
        resp.content_type = falcon.MEDIA_JSON
        resp.data = body


class EchoResource:
    """``POST /echo``: the request body back."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = req.bounded_stream.read()


def create_app() -> falcon.App:
    """The baseline WSGI app."""
    app = falcon.App()
    app.add_route(PREFIX + "/json", JsonResource())
    app.add_route(PREFIX + "/size/{n:int}", SizedResource())
    app.add_route(PREFIX + "/echo", EchoResource())
    return app


application = create_app()
