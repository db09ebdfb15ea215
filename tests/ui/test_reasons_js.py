"""Unit tests of webapp/js/reasons.js under Node: the one wording of why a plugin is down.

The browser tests prove card and details agree end to end; these pin the sentences for the
event shapes the supervisor writes (toru/supervisor/supervised.py, launcher.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .js_unit import NODE, run_module

ROOT = Path(__file__).resolve().parents[2]
REASONS = ROOT / "webapp" / "js" / "reasons.js"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def problem(plugin: dict, events: list[dict]) -> str:
    script = (
        f"import {{ problemText }} from {json.dumps(REASONS.as_uri())};\n"
        f"process.stdout.write(problemText({json.dumps(plugin)}, {json.dumps(events)}));\n"
    )
    return run_module(script)


def crashed(**details) -> dict:
    return {"event_type": "crashed", "details": details, "created_at": "2026-12-01T22:00:00Z"}


BACKOFF = {"id": "p", "state": "backoff", "enabled": True, "error": "exited"}


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({"reason": "exited", "signal": "SIGKILL"}, "Exited: killed by SIGKILL"),
        ({"reason": "exited", "exit_code": 3}, "Exited: exit code 3"),
        ({"reason": "exited"}, "Exited"),
        (
            {"reason": "memory limit", "signal": "SIGKILL"},
            "Memory limit reached: the OOM killer sent SIGKILL",
        ),
        (
            {"reason": "plugin did not create its socket within 5 s", "phase": "starting"},
            "Plugin did not create its socket within 5 s",
        ),
        (
            # The supervisor killed it after a lost connection: its own SIGKILL is no cause.
            {"reason": "connection lost (protocol error)", "signal": "SIGKILL"},
            "Connection lost (protocol error)",
        ),
    ],
)
def test_crash_reasons(details: dict, expected: str) -> None:
    assert problem(BACKOFF, [crashed(**details)]) == expected


def test_failed_names_the_give_up_and_the_last_cause() -> None:
    p = {"id": "p", "state": "failed", "enabled": False, "consecutive_failures": 10}
    events = [
        {"event_type": "disabled", "details": {"reason": "disabled after 10 consecutive failures"}},
        crashed(reason="exited", exit_code=1),
        crashed(reason="exited", signal="SIGSEGV"),
    ]
    assert problem(p, events) == "Disabled after 10 consecutive failures. Last: Exited: exit code 1"


def test_before_the_events_arrive_the_list_error_is_used() -> None:
    assert problem({**BACKOFF, "error": "exited"}, []) == "Exited"


def test_a_healthy_plugin_has_no_problem() -> None:
    p = {"id": "p", "state": "running", "health": "healthy", "enabled": True}
    assert problem(p, [crashed(reason="exited", signal="SIGKILL")]) == ""


def test_a_new_version_that_did_not_take_over_is_explained() -> None:
    running = {"id": "p", "state": "running", "enabled": True, "health": "healthy"}
    assert problem(running, []) == ""
    failed = {**running, "upgrade_error": "the new version failed to start: boom"}
    assert problem(failed, []) == (
        "New version not running (the previous one serves on):"
        " the new version failed to start: boom"
    )
