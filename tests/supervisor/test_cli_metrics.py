"""``toru plugins`` with and without a running supervisor; the supervisor's metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .. import timing
from .helpers import ROOT, SupervisorProc, make_plugin, scrape_metrics, wait_for


def toru(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORU_")}
    env.update(timing.product_env())  # the offline CLI runs --metadata itself: generous budget
    return subprocess.run(
        [sys.executable, "-m", "toru.cli", "plugins", "--home", str(home), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timing.WAIT,
    )


def test_plugins_cli_offline_then_online(home):
    # a fresh home: enable by id works on the file before any server ever ran
    r = toru(home, "enable", "alpha")
    assert r.returncode == 0, r.stderr
    assert "saved for its next start" in r.stdout
    state = json.loads((home / "plugins" / ".metadata" / "config.json").read_text())
    assert state["plugins"]["alpha"]["enabled"] is True
    assert toru(home, "enable", "../evil").returncode == 2
    make_plugin(home / "plugins", "alpha")
    make_plugin(home / "plugins", "beta")
    offline = json.loads(toru(home, "list", "--json").stdout)
    assert {p["id"]: p["enabled"] for p in offline} == {"alpha": True, "beta": False}
    assert toru(home, "rescan").returncode == 1  # nothing to rescan without a supervisor
    with SupervisorProc(home) as sup:
        sup.wait_state("alpha", "running")
        listed = json.loads(toru(home, "--json", "list").stdout)
        assert {p["id"]: p["state"] for p in listed} == {"alpha": "running", "beta": "stopped"}
        r = toru(home, "enable", "beta")
        assert r.returncode == 0 and "beta: enabled" in r.stdout
        assert sup.info("beta")["state"] == "running"
        r = toru(home, "disable", "alpha")
        assert r.returncode == 0 and sup.info("alpha")["state"] == "stopped"
        assert toru(home, "disable", "nope").returncode == 1
        make_plugin(home / "plugins", "gamma")
        assert "3 total" in toru(home, "rescan").stdout  # (the periodic check may be first)
        text = toru(home, "list").stdout
        assert "gamma" in text and "running" in text


def test_supervisor_metrics_in_the_multiprocess_directory(home):
    make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
        sup.client.http("/alpha", "GET", "/kv/set?key=a&value=1")
        from toru.errors import BadGateway

        with pytest.raises(BadGateway):
            sup.client.http("/alpha", "GET", "/crash")
        wait_for(lambda: sup.info("alpha")["restarts"] == 1)
        text = scrape_metrics(home)
        assert 'toru_plugin_up{plugin="alpha"} 1.0' in text
        assert 'toru_plugin_state{plugin="alpha",state="running"} 1.0' in text
        assert 'toru_plugin_crashes_total{plugin="alpha"} 1.0' in text
        assert 'toru_plugin_restarts_total{plugin="alpha"} 1.0' in text
        assert 'toru_kv_operations_total{action="set",plugin="alpha"} 1.0' in text
        stats = sup.call("stats", {"plugin": "alpha"})
        assert stats["latency"] and stats["restarts"][0]["count"] == 1
        # an admin's restart is a new process, not a crash restart (docs/operations.md)
        pid = sup.info("alpha")["pid"]
        restarted = sup.call("restart", {"plugin": "alpha"}, timeout=timing.WAIT)
        assert restarted["pid"] != pid and restarted["restarts"] == 1, restarted
        text = scrape_metrics(home)
        assert 'toru_plugin_restarts_total{plugin="alpha"} 1.0' in text
        assert 'toru_plugin_crashes_total{plugin="alpha"} 1.0' in text
    # a dead supervisor's live gauges are gone from the exposition
    assert 'toru_plugin_up{plugin="alpha"}' not in scrape_metrics(home)
