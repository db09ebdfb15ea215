"""ctx.kv over the TORU_KV_FD channel, against the SDK's KV double (real socketpair)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.sdk.sdk_plugins import SlowFast
from toru_plugin_api import KvClient, KvUnavailable, MemoryKv
from toru_plugin_api.testing import KvDouble, PluginHarness


def _client_and_double(data=None, timeout=2.0):
    double = KvDouble(data).start()
    fd = double.release_plugin_end()
    return double, fd


def test_get_set_delete_list_round_trip():
    double, fd = _client_and_double({"seed": "1"})

    async def main():
        kv = await KvClient.connect_fd(fd, timeout=2)
        assert await kv.get("seed") == "1"
        assert await kv.get("missing") is None
        await kv.set("a/1", "x")
        await kv.set("a/2", "y")
        await kv.set_json("cfg", {"n": 1})
        assert await kv.get_json("cfg") == {"n": 1}
        assert await kv.list("a/") == ["a/1", "a/2"]
        await kv.delete("a/1")
        assert await kv.list() == ["a/2", "cfg", "seed"]
        kv.close()

    try:
        asyncio.run(main())
        assert double.store == {"seed": "1", "a/2": "y", "cfg": '{"n":1}'}
    finally:
        double.close()


def test_pipelined_requests_are_matched_by_request_id():
    double, fd = _client_and_double({f"k{i}": str(i) for i in range(50)})

    async def main():
        kv = await KvClient.connect_fd(fd, timeout=2)
        values = await asyncio.gather(*(kv.get(f"k{i}") for i in range(50)))
        kv.close()
        return values

    try:
        assert asyncio.run(main()) == [str(i) for i in range(50)]
    finally:
        double.close()


def test_no_answer_times_out_and_a_closed_channel_is_unavailable():
    host, plugin = socket.socketpair()  # a "host" that never answers

    async def main():
        lost = asyncio.Event()
        kv = await KvClient.connect_fd(plugin.detach(), timeout=0.2, on_lost=lost.set)
        with pytest.raises(KvUnavailable, match="timed out"):
            await kv.get("x")
        host.close()
        await asyncio.wait_for(lost.wait(), 2)
        with pytest.raises(KvUnavailable):
            await kv.set("x", "y")

    asyncio.run(main())


def test_values_must_be_strings():
    async def main():
        with pytest.raises(TypeError):
            await MemoryKv().set("a", 1)  # type: ignore[arg-type]

    asyncio.run(main())


def test_plugin_handlers_use_the_host_store():
    with PluginHarness.in_process(SlowFast(), kv_data={"pre": "existing"}) as h:
        assert h.request("POST", "/kv/colour", "blue").json() == {"keys": ["colour", "pre"]}
        assert h.request("GET", "/kv/colour").json() == {"value": "blue"}
        assert h.kv == {"pre": "existing", "colour": "blue"}
        # host->plugin kv messages (handle_kv) reach the same store by default
        assert h.kv_request("get", "pre") == "existing"
        h.kv_request("delete", "pre")
        assert "pre" not in h.kv
