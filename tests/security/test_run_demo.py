"""`make run` from a checkout the plugin user cannot reach (root's 0700 ``/root``, the usual
place for a fresh clone as root): the demo still serves the examples, and says why and how
they would get the plugin user's isolation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import timing
from tests.servers import free_port

from .helpers import needs_root, proc_ids

ROOT = Path(__file__).resolve().parents[2]
TORU = Path(sys.prefix) / "bin" / "toru"


def _listed(home: Path) -> list[dict]:
    out = subprocess.run(
        [str(TORU), "plugins", "--home", str(home), "--json"],
        capture_output=True,
        text=True,
        timeout=timing.scaled(30),
    )
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


@needs_root
def test_make_run_under_a_private_directory_runs_the_examples_and_says_why(example_plugins):
    private = Path(tempfile.mkdtemp(prefix="toru-private-", dir="/tmp"))  # 0700, like /root
    home = private / "home"
    built = Path(next(iter(example_plugins.values()))).parent
    env = {k: v for k, v in os.environ.items() if k != "TORU_PLUGINS_USER"}  # the shipped default
    env |= timing.product_env()
    env["TORU_BIND"] = f"127.0.0.1:{free_port()}"
    log = private.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/run-demo", str(home), str(built)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timing.WAIT
        listed: list[dict] = []
        while time.monotonic() < deadline:
            listed = _listed(home)
            if listed and all(p["state"] == "running" for p in listed):
                break
            time.sleep(0.5)
        text = log.read_text()
        assert sorted(p["id"] for p in listed) == sorted(example_plugins), (listed, text)
        assert all(p["state"] == "running" for p in listed), (listed, text)
        assert f"make run: {private} is private (mode 700)" in text, text
        assert "chmod o+x" in text, text
        assert {proc_ids(p["pid"]) for p in listed} == {(0, 0)}  # as the message says
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timing.scaled(60))
        subprocess.run(["rm", "-rf", str(private), str(log)], check=False)
