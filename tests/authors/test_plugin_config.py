"""``[plugins.<id>.config]`` reaches the plugin as ``TORU_PLUGIN_CONFIG`` / ``ctx.config``,
and ``init`` carries the protocol version and capabilities: through a real supervisor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.supervisor.helpers import SupervisorProc, enable_on_disk, kill_leftovers
from toru.config import ConfigError, load_config, plugin_config_env

PLUGIN = Path(__file__).resolve().parents[1] / "sdk" / "author_errors_plugin.py"


def _install(home: Path, mode: str, plugin_id: str) -> None:
    plugins = home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    exe = plugins / f"{plugin_id}.binary"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{PLUGIN}" {mode} "$@"\n')
    exe.chmod(0o755)
    enable_on_disk(home, plugin_id)


@pytest.fixture
def home(short_home: Path):
    yield short_home
    kill_leftovers(short_home)


def test_config_reaches_an_sdk_plugin_and_is_reread_at_each_start(home: Path) -> None:
    _install(home, "config-echo", "config-echo")
    (home / "toru.toml").write_text(
        "[plugins.config-echo.config]\n"
        'greeting = "Hi"\nlimit = 3\nsince = 2026-12-01\n'
        "[plugins.config-echo.config.db]\n"
        'path = "/srv/x.db"\n'
        "[plugins.other.config]\n"
        'secret = "not for config-echo"\n'
    )
    with SupervisorProc(home) as sup:
        sup.wait_state("config-echo", "running", 30)
        got = json.loads(sup.client.http("/config-echo", "GET", "/").body)
        assert got == {
            "config": {
                "greeting": "Hi",
                "limit": 3,
                "since": "2026-12-01",
                "db": {"path": "/srv/x.db"},
            }
        }
        (home / "toru.toml").write_text('[plugins.config-echo.config]\ngreeting = "Hello"\n')
        sup.call("disable", {"plugin": "config-echo"})
        sup.call("enable", {"plugin": "config-echo"})
        sup.wait_state("config-echo", "running", 30)
        got = json.loads(sup.client.http("/config-echo", "GET", "/").body)
        assert got == {"config": {"greeting": "Hello"}}


def test_a_plugin_without_config_gets_an_empty_object(home: Path) -> None:
    assert plugin_config_env(home, "nobody") == {"TORU_PLUGIN_CONFIG": "{}"}


def test_init_carries_protocol_version_and_capabilities(home: Path) -> None:
    _install(home, "init-echo", "author-errors")
    (home / "toru.toml").write_text("")
    with SupervisorProc(home) as sup:
        sup.wait_state("author-errors", "running", 30)
        init = json.loads(sup.client.http("/ae", "GET", "/").body)
        assert init["action"] == "init"
        assert init["protocol_version"] == 1
        assert init["capabilities"] == ["kv", "binary_bodies"]  # PROTOCOL.md, section 5


def test_a_config_that_is_not_a_table_stops_the_load_naming_the_key(home: Path) -> None:
    (home / "toru.toml").write_text(
        '[plugins]\nuser = "toru-plugins"\n[plugins.x]\nconfig = "on"\n'
    )
    with pytest.raises(ConfigError, match=r"plugins\.x\.config must be a table .*got str"):
        load_config(home, env={})


def test_a_toml_broken_while_running_fails_that_start_with_the_reason(home: Path) -> None:
    _install(home, "config-echo", "config-echo")
    (home / "toru.toml").write_text('[plugins.config-echo.config]\ngreeting = "Hi"\n')
    never_gives_up = {"TORU_MAX_FAILURES": "100000", "TORU_RESTART_BACKOFF": "0.5"}
    with SupervisorProc(home, env=never_gives_up) as sup:
        sup.wait_state("config-echo", "running", 30)
        (home / "toru.toml").write_text("[plugins.config-echo.config\n")  # unterminated table
        sup.call("disable", {"plugin": "config-echo"})
        sup.call("enable", {"plugin": "config-echo"})
        info = sup.wait_state("config-echo", "backoff", 30)
        assert "toru.toml" in info["error"], info
        (home / "toru.toml").write_text('[plugins.config-echo.config]\ngreeting = "fixed"\n')
        sup.wait_state("config-echo", "running", 60)  # the next restart reads the fixed file
        got = json.loads(sup.client.http("/config-echo", "GET", "/").body)
        assert got == {"config": {"greeting": "fixed"}}
