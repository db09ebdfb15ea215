"""The worker's asyncio control client against a scripted supervisor on a real Unix socket:
one connection for every request, pipelined, replies matched by id whatever their order; a
deadline is 503; a lost connection fails everything pending at once; a supervisor that is
gone is retried with a backoff, 503 + Retry-After meanwhile, and found again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests import timing
from tests.loops import run_async
from toru.errors import NotFound, SupervisorUnavailable
from toru.wsgi import control as control_mod
from toru.wsgi.control import ControlClient
from toru_plugin_api.codec import Decoder, encode


class ScriptedSupervisor:
    """Answers ``echo`` after ``args["ms"]`` (so replies come out of order), ``missing`` with
    a 404, never answers ``hang``; counts connections."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def stop(self) -> None:
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await self.server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        decoder = Decoder()
        while data := await reader.read(65536):
            for msg in decoder.feed(data):
                asyncio.get_running_loop().create_task(self._answer(msg, writer))

    async def _answer(self, msg: dict, writer: asyncio.StreamWriter) -> None:
        if msg["op"] == "hang":
            return
        if msg["op"] == "missing":
            err = {"code": "not_found", "message": "no plugin", "status": 404}
            writer.write(encode({"id": msg["id"], "ok": False, "error": err}))
            return
        await asyncio.sleep(msg["args"].get("ms", 0) / 1000)
        writer.write(encode({"id": msg["id"], "ok": True, "result": msg["args"]}))


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "s.sock"


def test_pipelined_on_one_connection_and_matched_by_id(sock_path):
    async def main():
        sup = ScriptedSupervisor(sock_path)
        await sup.start()
        client = ControlClient(sock_path)
        delays = [50, 10, 30, 0, 40, 20]
        results = await asyncio.gather(
            *[client.call("echo", {"ms": ms, "n": i}) for i, ms in enumerate(delays)]
        )
        assert [r["n"] for r in results] == list(range(len(delays)))
        assert sup.connections == 1
        with pytest.raises(NotFound):
            await client.call("missing")
        with pytest.raises(SupervisorUnavailable, match="in time"):
            await client.call("hang", {}, 0.2)
        assert (await client.call("echo", {"n": "after"}))["n"] == "after"
        assert sup.connections == 1  # a deadline costs nothing but that request
        client.close()
        await sup.stop()

    run_async(main())


def test_lost_connection_fails_all_pending_then_backoff_and_reconnect(sock_path, monkeypatch):
    monkeypatch.setattr(control_mod, "RECONNECT_BACKOFF", (timing.scaled(0.5),))

    async def main():
        sup = ScriptedSupervisor(sock_path)
        await sup.start()
        client = ControlClient(sock_path)
        pending = [
            asyncio.ensure_future(client.call("hang", {}, timing.scaled(30))) for _ in range(5)
        ]
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sup.stop()
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(o, SupervisorUnavailable) for o in outcomes), outcomes
        assert loop.time() - t0 < timing.scaled(5)  # at once, not after their deadlines

        with pytest.raises(SupervisorUnavailable):  # the connect fails: backoff starts
            await client.call("echo")
        with pytest.raises(SupervisorUnavailable) as exc:  # within the backoff: no attempt
            await client.call("echo")
        assert exc.value.retry_after >= 1

        await sup.start()  # the supervisor is back
        deadline = loop.time() + timing.WAIT
        while True:
            try:
                assert (await client.call("echo", {"n": 1}))["n"] == 1
                break
            except SupervisorUnavailable:
                assert loop.time() < deadline
                await asyncio.sleep(0.1)
        assert sup.connections == 2
        client.close()
        await sup.stop()

    run_async(main())
