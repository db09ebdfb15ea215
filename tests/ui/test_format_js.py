"""Unit tests of webapp/js/format.js under Node: every supervisor state has a label and a tone.

The supervisor's states (toru/supervisor/states.py) gained ``discovering`` and ``stopping``;
a state the UI does not know would show as its raw name with no colour.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toru.supervisor.states import PluginState

from .js_unit import NODE, run_module

ROOT = Path(__file__).resolve().parents[2]
FORMAT = ROOT / "webapp" / "js" / "format.js"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def run(expr: str) -> object:
    script = (
        f"import * as f from {json.dumps(FORMAT.as_uri())};\n"
        f"process.stdout.write(JSON.stringify({expr}));\n"
    )
    return json.loads(run_module(script))


@pytest.mark.parametrize("state", [s.value for s in PluginState])
def test_every_supervisor_state_has_a_label(state):
    label = run(f"f.stateLabel({json.dumps(state)})")
    assert label and label != state, f"state {state!r} shows as its raw name"


def test_discovering_and_stopping_are_worded():
    assert run('f.pluginHealth({state: "discovering", enabled: true})') == {
        "tone": "amber",
        "label": "Reading metadata",
    }
    retrying = run('f.pluginHealth({state: "discovering", enabled: true, error: "timed out"})')
    assert retrying["label"] == "Reading metadata, retrying"
    assert run('f.pluginHealth({state: "stopping", enabled: false})')["label"] == "Stopping"


def test_a_changed_binary_is_worded():
    assert run('f.pluginHealth({state: "changed", enabled: true})')["tone"] == "red"
    serving = run(
        'f.pluginHealth({state: "running", health: "healthy", enabled: true,'
        ' binary_change: {found_sha256: "ab"}})'
    )
    assert serving["tone"] == "amber" and "approval" in serving["label"]
    assert run('f.stateTone("changed")') == "bad"
