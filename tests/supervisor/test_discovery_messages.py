"""Error messages that say what to do (issue 14), through a real supervisor: a plugin that
logs to stdout before its metadata JSON is told to log to stderr, quoting what it printed,
in its state's ``error`` and its ``invalid`` event; a start that times out names the setting
to raise. The words are the checker's (``toru plugin check``), from one function.
"""

from __future__ import annotations

import json
import sys

from toru_plugin_api.codec import ProtocolError

from .. import timing
from .helpers import SupervisorProc, enable_on_disk, make_plugin, metadata_timing_out, wait_for

METADATA = {"id": "noisy", "name": "Noisy", "version": "1", "icon": "N", "route": "/noisy"}


def _noisy_plugin(plugins_dir, before: str, after: str = "") -> None:
    """A plugin whose ``--metadata`` prints ``before`` and ``after`` around its JSON."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    path = plugins_dir / "noisy.binary"
    out = before + json.dumps(METADATA) + after
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({out!r})\n")
    path.chmod(0o755)


def test_stdout_before_the_json_is_quoted_with_what_to_do(home):
    _noisy_plugin(home / "plugins", "Starting...\n")
    with SupervisorProc(home) as sup:
        info = wait_for(lambda: (i := sup.info("noisy"))["state"] == "invalid" and i)
        want = "it printed 'Starting...' before the JSON: log to stderr"
        assert want in info["error"], info["error"]
        events = sup.call("events", {"plugin": "noisy"})
        invalid = [e for e in events if e["event_type"] == "invalid"]
        assert invalid and want in invalid[0]["details"]["reason"], events


def test_stdout_after_the_json_is_quoted_too(home):
    _noisy_plugin(home / "plugins", "", "\nready\n")
    with SupervisorProc(home) as sup:
        info = wait_for(lambda: (i := sup.info("noisy"))["state"] == "invalid" and i)
        assert "it printed 'ready' after the JSON: log to stderr" in info["error"]


def test_supervisor_and_checker_share_the_words():
    """The checker's message is the supervisor's: one function (unit check beside the above)."""
    from toru_plugin_api.messages import metadata_output_json

    try:
        metadata_output_json(b"Starting...\n" + json.dumps(METADATA).encode())
    except ProtocolError as exc:
        assert "'Starting...' before the JSON: log to stderr" in str(exc)
    else:
        raise AssertionError("stdout noise was accepted")


def test_metadata_timeout_names_the_setting_and_quotes_stdout(home):
    """A plugin that ignores --metadata and starts serving: the probe times out (the plugin
    sleeps far longer than the short product timeout) and the error says what it printed."""
    plugins = home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    path = plugins / "server.binary"
    path.write_text(
        f"#!{sys.executable}\nimport sys, time\n"
        "sys.stdout.write('Starting server on :8080\\n'); sys.stdout.flush()\n"
        f"time.sleep({timing.scaled(120)})\n"
    )
    path.chmod(0o755)
    with metadata_timing_out(home, "server") as (_, info):
        assert info["state"] == "discovering"
        assert "raise TORU_METADATA_TIMEOUT / supervisor.metadata_timeout" in info["error"]
        assert "it printed 'Starting server on :8080' on stdout" in info["error"], info


def test_socket_timeout_names_the_setting(home):
    make_plugin(home / "plugins", "nosock", mode="no-socket")
    enable_on_disk(home, "nosock")
    # the plugin never creates its socket; a short product timeout makes the wait end
    env = {"TORU_START_TIMEOUT": str(timing.scaled(1)), "TORU_RESTART_BACKOFF": "60"}
    with SupervisorProc(home, env=env) as sup:
        info = wait_for(lambda: (i := sup.info("nosock"))["error"] and i, timeout=30)
        assert "raise TORU_START_TIMEOUT / supervisor.start_timeout" in info["error"], info
