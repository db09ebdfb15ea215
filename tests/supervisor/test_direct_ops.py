"""The supervisor side of the direct channel against a real supervisor: ``routes`` lists
only multi-connection plugins, ``report`` feeds the stats and the event log, and
``run/routes.gen`` moves on every change."""

from __future__ import annotations

import pytest

from toru.errors import ToruError
from toru.supervisor.route_generation import open_generation, read_generation

from .helpers import SupervisorProc, make_plugin, wait_for


def test_routes_and_generation_follow_the_plugin_state(home):
    make_plugin(home / "plugins", "alpha")  # one connection: never routed directly
    with SupervisorProc(home) as sup:
        mapping = open_generation(home / "run" / "routes.gen")
        assert mapping is not None
        table = sup.call("routes")
        assert table == {"generation": read_generation(mapping), "routes": {}}
        before = read_generation(mapping)
        sup.call("enable", {"plugin": "alpha"})
        sup.wait_state("alpha", "running")
        assert read_generation(mapping) > before  # starting, running: each a bump
        assert sup.call("routes")["routes"] == {}  # running, but not multi_connection
        mid = read_generation(mapping)
        sup.call("disable", {"plugin": "alpha"})
        assert read_generation(mapping) > mid


def test_report_feeds_stats_and_timeout_events(home):
    make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
        sup.wait_state("alpha", "running")
        result = sup.call(
            "report",
            {
                "plugins": {
                    "alpha": {"latencies": [0.001, 0.002, "x", None, True], "timeouts": 2},
                    "gone": {"latencies": [0.5]},  # removed since: skipped, not an error
                    "alpha-bad": "not an object",
                }
            },
        )
        assert result == {"ok": True}
        stats = sup.call("stats", {"plugin": "alpha"})
        assert sum(b["count"] for b in stats["latency"]) == 2  # only the two numbers
        events = wait_for(
            lambda: [
                e
                for e in sup.call("events", {"plugin": "alpha", "limit": 20})
                if e["event_type"] == "timeout"
            ]
        )
        assert events[0]["details"] == {"direct": True, "count": 2}

        for bad in ({}, {"plugins": "x"}, {"plugins": ["alpha"]}):
            with pytest.raises(ToruError) as err:
                sup.call("report", bad)
            assert err.value.status == 400
