"""The checker as a new author meets it: paths as typed, stderr shown, messages that say
what to do (issue 14)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import timing
from toru_plugin_api.check import PluginChecker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MARK = "the-distinctive-stderr-line-42"


def _check(path: Path | str, verbose: bool = False) -> tuple[PluginChecker, str]:
    out = io.StringIO()
    checker = PluginChecker(path, verbose, out, timeout=timing.scaled(5))
    checker.run()
    return checker, out.getvalue()


def _failed(checker: PluginChecker) -> list[str]:
    return [c.name for c in checker.results if c.status == "FAIL"]


def _toru_check(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = "/usr/bin:/bin"  # the plugin's directory is not on it
    return subprocess.run(
        [sys.executable, "-m", "toru.cli", "plugin", "check", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timing.WAIT,
    )


@pytest.mark.parametrize("spelling", ["./good.binary", "good.binary"])
def test_a_relative_path_runs_that_file_not_one_on_path(misbehaving, spelling):
    exe = misbehaving("good")
    done = _toru_check(exe.parent, spelling)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Checking {spelling}" in done.stdout
    assert "Result: PASS" in done.stdout


def test_verbose_prints_the_plugins_real_stderr(sdk_plugin_exe):
    checker, report = _check(sdk_plugin_exe, verbose=True)
    assert checker.ok, report
    stderr = report.split("--- plugin stderr ---", 1)[1].split("--- connection", 1)[0]
    assert '"message":"init called"' in stderr, report
    assert "(empty)" not in stderr


def test_a_failed_check_shows_the_stderr_tail(author_plugin):
    checker, report = _check(author_plugin("stderr-then-exit"))
    assert _failed(checker) == ["socket"], report
    socket_line = report.index("FAIL  socket")
    assert MARK in report[socket_line:], report


def test_a_failed_metadata_run_shows_its_stderr(author_plugin):
    checker, report = _check(author_plugin("metadata-stderr"))
    assert _failed(checker) == ["metadata"], report
    assert f"| {MARK}: cannot read settings.ini" in report


def test_stdout_before_the_metadata_json_says_log_to_stderr(author_plugin):
    checker, report = _check(author_plugin("stdout-noise"))
    assert _failed(checker) == ["metadata"], report
    assert "'Loading plugin settings...'" in report
    assert "log to stderr" in report


def test_stdout_after_the_metadata_json_is_quoted_too(author_plugin):
    checker, report = _check(author_plugin("stdout-after"))
    assert _failed(checker) == ["metadata"], report
    assert "'metadata printed, bye' after the JSON: log to stderr" in report


def test_a_bad_id_is_quoted(author_plugin):
    checker, report = _check(author_plugin("bad-id"))
    assert _failed(checker) == ["metadata"], report
    assert "'Bad_Id!'" in report


def test_sdk_init_that_raises_is_named(author_plugin):
    checker, report = _check(author_plugin("init-raises"))
    assert _failed(checker) == ["request"], report
    assert "init raised ValueError: no api key" in report


def test_a_reply_breaking_the_schema_names_the_field(author_plugin):
    checker, report = _check(author_plugin("bad-header"))
    assert _failed(checker) == ["request"], report
    assert "$.payload.headers.X-Count: expected string, got 1" in report


def test_metadata_timeout_names_the_setting(author_plugin, monkeypatch):
    monkeypatch.setenv("TORU_METADATA_TIMEOUT", "0.5")
    checker, report = _check(author_plugin("slow-metadata"))
    assert _failed(checker) == ["metadata"], report
    assert "within 0.5 s" in report and "raise TORU_METADATA_TIMEOUT" in report


def test_start_timeout_names_the_setting(misbehaving, monkeypatch):
    monkeypatch.setenv("TORU_START_TIMEOUT", "0.5")
    checker, report = _check(misbehaving("no-socket"))
    assert _failed(checker) == ["socket"], report
    assert "within 0.5 s" in report and "raise TORU_START_TIMEOUT" in report


def test_host_to_plugin_kv_is_not_checked(misbehaving):
    """The host never sends kv to a plugin, so a plugin that ignores it gets no warning."""
    checker, report = _check(misbehaving("good"))
    assert checker.ok, report
    assert not [c for c in checker.results if c.status == "WARN" and "kv" in c.detail], report
    assert "kv" not in [c.name for c in checker.results]


@pytest.mark.parametrize("spelling", ["./good.binary", "good.binary"])
def test_the_harness_runs_a_relative_path_too(misbehaving, monkeypatch, spelling):
    from toru_plugin_api.testing import PluginHarness

    exe = misbehaving("good")
    monkeypatch.chdir(exe.parent)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with PluginHarness.subprocess(spelling, start_timeout=timing.START) as h:
        assert h.request("GET", "/", timeout=timing.HTTP).status == 200
