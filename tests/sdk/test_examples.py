"""The example plugins, built as the host installs them: conformance and their HTTP APIs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from toru_plugin_api.check import PluginChecker
from toru_plugin_api.testing import PluginHarness

EXAMPLES = {
    "hello-python": "/hello",
    "raw-python": "/raw",
    "hello-node": "/hello-node",
    "system-info": "/system-info",
}


def test_every_example_is_built(example_plugins):
    assert set(example_plugins) == set(EXAMPLES)


@pytest.mark.parametrize("plugin_id", sorted(EXAMPLES))
def test_example_passes_toru_plugin_check(example_plugins, plugin_id):
    out = io.StringIO()
    checker = PluginChecker(example_plugins[plugin_id], out=out)
    checker.run()
    report = out.getvalue()
    assert checker.ok, report
    assert not [c for c in checker.results if c.status == "WARN"], report
    meta = json.loads(
        subprocess.run([example_plugins[plugin_id], "--metadata"], capture_output=True).stdout
    )
    assert (meta["id"], meta["route"]) == (plugin_id, EXAMPLES[plugin_id])


def test_toru_cli_runs_the_checker(example_plugins):
    done = subprocess.run(
        [sys.executable, "-m", "toru.cli", "plugin", "check", str(example_plugins["raw-python"])],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Result: PASS" in done.stdout


@pytest.mark.parametrize("flags", [("-I",), ("-I", "-S")])
def test_hello_python_zipapp_runs_without_site_packages(example_plugins, flags):
    """-I isolates from the environment; -S also drops site-packages: the SDK travels inside."""
    binary = str(example_plugins["hello-python"])
    meta = subprocess.run(
        [sys.executable, *flags, binary, "--metadata"], capture_output=True, check=True
    )
    assert json.loads(meta.stdout)["id"] == "hello-python"
    with PluginHarness.subprocess(sys.executable, args=(*flags, binary)) as h:
        assert h.request("POST", "/counter/increment").json() == {"count": 1}
        assert h.request("GET", "/bundle.js").status == 200
        assert h.shutdown() == 0


def test_hello_python_api(example_plugins):
    with PluginHarness.subprocess(example_plugins["hello-python"], kv_data={"count": "41"}) as h:
        assert h.request("GET", "/counter").json() == {"count": 41}
        replies = h.pipeline([("POST", "/counter/increment")] * 5)
        assert sorted(r.json()["count"] for r in replies) == [42, 43, 44, 45, 46]
        assert h.kv["count"] == "46"

        r = h.request(
            "PATCH", "/echo/a/b?x=1&y=", "payload", headers={"X-Forwarded-For": "10.0.0.1"}
        )
        assert r.json() == {
            "method": "PATCH",
            "path": "/echo/a/b",
            "raw_path": "/echo/a/b?x=1&y=",
            "query": {"x": "1", "y": ""},
            "headers": {"X-Forwarded-For": "10.0.0.1"},
            "body": "payload",
        }
        assert h.request("GET", "/echo").json()["path"] == "/echo"

        r = h.request("GET", "/bytes")
        assert (
            r.body == bytes(range(256)) and r.header("Content-Type") == "application/octet-stream"
        )
        assert r.raw["payload"]["body_encoding"] == "base64"
        blob = b"\xff\xfe\x00binary\x80"
        assert h.request("POST", "/bytes", blob).body == blob

        bundle = h.request("GET", "/bundle.js").text
        for needle in ("hello-increment", "hello-count", "__helloUnmounted", "showToast"):
            assert needle in bundle
        h.shutdown()
        assert any(e.get("message") == "counter incremented" for e in h.logs())


def test_system_info_api(example_plugins):
    with PluginHarness.subprocess(example_plugins["system-info"]) as h:
        info = h.request("GET", "/").json()
        assert info["uptime"]["uptime_seconds"] > 0
        assert info["memory"]["total_bytes"] >= info["memory"]["available_bytes"] > 0
        assert info["load"]["cpus"] >= 1
        assert any(d["mount"] == "/" for d in info["disks"])
        for path in ("/uptime", "/load", "/memory", "/disks"):
            assert h.request("GET", path).status == 200
        assert "si-disks" in h.request("GET", "/bundle.js").text


def test_hello_node_counts_visits_in_the_host_store(example_plugins):
    with PluginHarness.subprocess(example_plugins["hello-node"], kv_data={"visits": "7"}) as h:
        assert h.request("POST", "/visit").json()["visits"] == 8
        assert h.kv["visits"] == "8"
        assert h.request("GET", "/").json()["visits"] == 8


def test_raw_python_is_one_stdlib_file():
    src = (
        Path(__file__).resolve().parents[2] / "examples" / "raw-python" / "plugin.py"
    ).read_text()
    assert "toru_plugin_api" not in src
    assert src.startswith("#!/usr/bin/env python3")
