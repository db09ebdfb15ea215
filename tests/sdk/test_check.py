"""The conformance checker: it passes good plugins and names what is wrong with bad ones."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from toru_plugin_api.check import PluginChecker

from .. import timing


def _run(path, timeout: float | None = None):
    out = io.StringIO()
    timeout = timing.scaled(10.0) if timeout is None else timeout
    checker = PluginChecker(path, out=out, timeout=timeout)
    checker.run()
    return checker, out.getvalue()


def test_original_style_plugin_passes(misbehaving):
    checker, report = _run(misbehaving("good"))
    assert checker.ok, report
    assert "Result: PASS" in report


@pytest.mark.parametrize(
    ("mode", "failing"),
    [
        ("bad-metadata", "metadata"),
        ("no-socket", "socket"),
        ("wrong-id", "request"),
        ("no-exit", "shutdown"),
        ("crash-on-garbage", "malformed frame"),
        ("false-multi", "multi-connection"),
        ("false-binary", "binary-bodies"),
        ("bad-status", "request"),
    ],
)
def test_misbehaviour_is_reported(misbehaving, mode, failing):
    checker, report = _run(
        misbehaving(mode), timeout=timing.scaled(3.0)
    )  # the hang modes wait it out
    assert not checker.ok
    assert [c.name for c in checker.results if c.status == "FAIL"] == [failing], report
    assert "Result: FAIL" in report


def test_a_reply_without_status_is_200_and_passes(misbehaving):
    checker, report = _run(misbehaving("no-status"))
    assert checker.ok, report
    assert "GET / answered 200" in report


def test_sdk_plugin_keeps_its_multi_connection_promise(sdk_plugin_exe):
    checker, report = _run(sdk_plugin_exe)
    assert [c.status for c in checker.results if c.name == "multi-connection"] == ["PASS"], report
    # and its binary_bodies one: a non-UTF-8 body in a binary frame, answered in one
    assert [c.status for c in checker.results if c.name == "binary-bodies"] == ["PASS"], report


def test_an_original_plugin_is_not_sent_binary_frames(misbehaving):
    checker, report = _run(misbehaving("good"))
    assert [c.status for c in checker.results if c.name == "binary-bodies"] == ["SKIP"], report


def test_not_executable(tmp_path):
    f = tmp_path / "x.binary"
    f.write_text("#!/bin/sh\n")
    checker, report = _run(f)
    assert not checker.ok and "chmod +x" in report


def test_module_entry_point_exit_codes(misbehaving):
    good = subprocess.run(
        [sys.executable, "-m", "toru_plugin_api.check", str(misbehaving("good"))],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "toru_plugin_api.check", str(misbehaving("bad-metadata"))],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
