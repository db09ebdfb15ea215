"""The supervisor with the real example plugins (SDK zipapp and the original-style one)."""

from __future__ import annotations

import json
import shutil

import pytest

from .helpers import SupervisorProc, enable_on_disk, kill_leftovers, pid_alive


@pytest.fixture
def home(short_home, example_plugins):
    for pid in ("hello-python", "raw-python"):
        if pid not in example_plugins:
            pytest.skip(f"example {pid} not built")
        shutil.copy(example_plugins[pid], short_home / "plugins" / f"{pid}.binary")
    yield short_home
    kill_leftovers(short_home)


@pytest.fixture
def short_home(short_home):
    (short_home / "plugins").mkdir()
    return short_home


def test_sdk_and_original_examples_proxy_kv_health_and_stop(home):
    enable_on_disk(home, "hello-python", "raw-python")
    with SupervisorProc(home, env={"TORU_HEALTH_INTERVAL": "0.2"}) as sup:
        pids = [sup.wait_state(p, "running")["pid"] for p in ("hello-python", "raw-python")]
        c = sup.client
        first = json.loads(c.http("/hello", "GET", "/counter").body)["count"]
        assert json.loads(c.http("/hello", "POST", "/counter/increment").body)["count"] == first + 1
        stored = sup.call("kv", {"plugin": "hello-python", "action": "list"})["keys"]
        assert stored, "the SDK counter lives in the plugin's KV namespace"
        echo = json.loads(c.http("/hello", "PUT", "/echo?x=1", {"X-A": "b"}, b"payload").body)
        assert echo["method"] == "PUT" and echo["body"] == "payload"
        raw = bytes(range(256))
        resp = c.http("/hello", "POST", "/bytes", {"Content-Type": "application/octet-stream"}, raw)
        assert resp.body == raw  # non-UTF-8 round trip through base64 on both hops
        assert c.http("/raw", "GET", "/").status < 500
        # health probes keep both healthy (the original plugin may answer /health with 404)
        for p in ("hello-python", "raw-python"):
            info = sup.info(p)
            assert info["health"] == "healthy" and info["restarts"] == 0
        bundle = c.http("/hello", "GET", "/bundle.js")
        assert bundle.status == 200 and b"ToruPlugins" in bundle.body
    for pid in pids:
        assert not pid_alive(pid)


def test_node_and_system_info_examples_run_and_stay_healthy(short_home, example_plugins):
    ids = ("hello-node", "system-info")
    for pid in ids:
        if pid not in example_plugins:
            pytest.skip(f"example {pid} not built")
        shutil.copy(example_plugins[pid], short_home / "plugins" / f"{pid}.binary")
    enable_on_disk(short_home, *ids)
    try:
        with SupervisorProc(short_home, env={"TORU_HEALTH_INTERVAL": "0.2"}) as sup:
            for pid in ids:
                sup.wait_state(pid, "running")
            assert sup.client.http("/hello-node", "GET", "/").status == 200
            assert sup.client.http("/system-info", "GET", "/").status == 200
            for pid in ids:
                assert sup.info(pid)["restarts"] == 0
    finally:
        kill_leftovers(short_home)
