"""A real Debian ``prometheus`` for tests: config from the shipped example, HTTP API queries.

``Prometheus(workdir, config_text).start()`` runs the binary in its own process group on a
free loopback port; ``query(expr)`` calls ``/api/v1/query``; ``stop()`` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests import timing
from tests.servers import ROOT, free_port

DEPLOY = ROOT / "deploy" / "prometheus"


def replace_once(text: str, old: str, new: str) -> str:
    """``text.replace(old, new)`` that fails loudly when the shipped file no longer has ``old``
    (so a test never silently runs a config other than the one it claims to)."""
    assert text.count(old) == 1, f"expected exactly one {old!r} in the shipped config"
    return text.replace(old, new)


def shipped_config(target: str, token_file: Path, interval: str = "1s") -> str:
    """deploy/prometheus/prometheus.yml pointed at ``target``, with the repo's alert rules
    and ``token_file``, scraping and evaluating every ``interval``."""
    text = (DEPLOY / "prometheus.yml").read_text()
    text = replace_once(text, "scrape_interval: 15s", f"scrape_interval: {interval}")
    text = replace_once(text, "evaluation_interval: 15s", f"evaluation_interval: {interval}")
    text = replace_once(text, "- /etc/prometheus/toru-alerts.yml", f"- {DEPLOY / 'alerts.yml'}")
    text = replace_once(
        text, "credentials_file: /etc/prometheus/toru.token", f"credentials_file: {token_file}"
    )
    return replace_once(text, '"127.0.0.1:80"', f'"{target}"')


class Prometheus:
    """One ``prometheus`` process with its own TSDB directory under ``workdir``."""

    def __init__(self, workdir: Path, config_text: str) -> None:
        self.workdir = Path(workdir)
        self.config = self.workdir / "prometheus.yml"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config_text)
        self.log_path = self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        """Run it and wait for ``/-/ready``."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timing.WAIT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.output()}"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as r,
            ):
                if r.status == 200:
                    return self
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timing.WAIT}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL the group. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timing.scaled(10))
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timing.scaled(10))

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` (asserts ``status == "success"``)."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        return self.api("query", query=expr)["result"]

    def wait_for(self, expr: str, timeout: float = timing.WAIT) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns a non-empty vector; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            assert time.monotonic() < deadline, f"{expr!r} returned nothing within {timeout}s"
            time.sleep(0.5)
