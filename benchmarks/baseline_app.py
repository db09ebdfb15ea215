"""The baselines: a tiny Falcon app answering the benchmark plugin's bodies directly, no
proxying, as WSGI (``application``, for gunicorn's ``sync``/``gthread`` workers) and as ASGI
(``asgi_application``, for gunicorn's native ``asgi`` worker).

Both mount the same paths as the proxied scenarios (``/api/plugins/route/bench-sdk/...``)
so request lines are byte-for-byte the same size, and answer the same bytes: the ASGI
responders call the WSGI ones, which only set attributes on the response.
"""

from __future__ import annotations

import falcon
import falcon.asgi

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


class AsyncJsonResource(JsonResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:  # type: ignore[override]
        JsonResource.on_get(self, req, resp)


class AsyncSizedResource(SizedResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, n: int) -> None:  # type: ignore[override]
        SizedResource.on_get(self, req, resp, n)


class AsyncEchoResource:
    """``POST /echo`` on ASGI: the body is read from the request's async stream."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = await req.stream.read()


def _mount(app: falcon.App, json: object, sized: object, echo: object) -> falcon.App:
    app.add_route(PREFIX + "/json", json)
    app.add_route(PREFIX + "/size/{n:int}", sized)
    app.add_route(PREFIX + "/echo", echo)
    return app


def create_app() -> falcon.App:
    """The WSGI baseline."""
    return _mount(falcon.App(), JsonResource(), SizedResource(), EchoResource())


def create_asgi_app() -> falcon.asgi.App:
    """The ASGI baseline (same routes, same bodies)."""
    return _mount(falcon.asgi.App(), AsyncJsonResource(), AsyncSizedResource(), AsyncEchoResource())


application = create_app()
asgi_application = create_asgi_app()
