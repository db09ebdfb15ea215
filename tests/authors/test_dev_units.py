"""The dev loop's pieces that need no server: build-script lookup, the source snapshot,
the atomic install, the socket-path guard, the log tail."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from toru.plugin_dev import DevError, DevLoop, LogTail, find_build, install, source_snapshot


def test_build_script_lookup_and_a_helpful_error(tmp_path: Path) -> None:
    with pytest.raises(DevError, match=r"no build script .*toru plugin new"):
        find_build(tmp_path)
    (tmp_path / "build.js").write_text("")
    assert find_build(tmp_path) == ["node", "build.js"]


def test_snapshot_ignores_build_output_caches_and_the_dev_home(tmp_path: Path) -> None:
    for rel in (
        "src/a.rs",
        "x.binary",
        ".x.binary.tmp",
        "target/release/x",
        ".toru-dev/var/log/a.log",
        "__pycache__/a.pyc",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("1")
    assert list(source_snapshot(tmp_path)) == ["src/a.rs"]


def test_install_replaces_a_running_binary_atomically(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    new = tmp_path / "new.binary"
    new.write_bytes(b"#!/bin/sh\necho new\n")
    plugins.mkdir()
    old = plugins / "p.binary"
    old.write_bytes(b"old")
    with open(old, "rb") as held:  # a reader of the old file keeps seeing the old bytes
        target = install(new, plugins, "p")
        assert held.read() == b"old"
    assert target.read_bytes() == new.read_bytes() and os.access(target, os.X_OK)
    assert [p.name for p in plugins.iterdir()] == ["p.binary"]  # no temporary left


def test_a_default_home_too_deep_for_the_socket_moves_to_tmp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    binary = deep / "x.binary"
    binary.write_text("#!/bin/sh\n")
    out = io.StringIO()
    loop = DevLoop(deep, None, "127.0.0.1:0", 0.2, out)
    loop.install(binary, {"id": "p"})
    assert loop.home.parent == Path(tempfile.gettempdir()) and loop.home.name.startswith(
        "toru-dev-"
    )
    assert (loop.home / "plugins" / "p.binary").is_file()
    assert "too deep for the plugin's Unix socket path" in out.getvalue()
    shutil.rmtree(loop.home)


def test_a_given_home_too_deep_for_the_socket_says_pass_a_shorter_one(tmp_path: Path) -> None:
    loop = DevLoop(tmp_path, tmp_path / ("h" * 120), "127.0.0.1:0", 0.2, io.StringIO())
    with pytest.raises(DevError, match="pass --home with a shorter directory"):
        loop.install(tmp_path / "x.binary", {"id": "p"})


def test_log_tail_follows_appends_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    log.write_text(json.dumps({"message": "before"}) + "\n")
    tail = LogTail(log)
    with open(log, "a") as f:
        f.write(
            json.dumps(
                {
                    "timestamp": "2026-12-01T10:00:00.123Z",
                    "level": "warn",
                    "plugin": "p",
                    "message": "hi",
                    "n": 1,
                }
            )
            + "\n"
        )
        f.write('{"message": "half')
    assert tail.lines() == ["10:00:00.123 WARN  [p] hi  n=1"]
    log.rename(tmp_path / "p.log.1")
    log.write_text("plain line\n")
    assert tail.lines() == ["plain line"]
