"""The processes a benchmark run starts: the baseline gunicorn, Toru, nginx in front.

Every class here starts its process in its own session and its ``stop()`` is idempotent and
kills the whole group, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def toru_app_spec() -> str:
    """The ``module:app`` that ``toru serve`` hands gunicorn (read from toru/serve.py)."""
    with contextlib.suppress(OSError):
        m = re.search(r'"(toru\.wsgi[\w.]*:\w+)"', (ROOT / "toru" / "serve.py").read_text())
        if m:
            return m.group(1)
    return "toru.wsgi:application"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(
    host: str, port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """One GET; ``(status, body)``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _stop_group(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _wait_http(
    proc: subprocess.Popen, port: int, path: str, log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}"
            )
        try:
            status, _ = http_get("127.0.0.1", port, path, timeout=2)
            if status == 200:
                return
            last = status
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(
        f"not answering {path} after {timeout}s ({last}):\n{log.read_text(errors='replace')[-2000:]}"
    )


class _LocalServer:
    """A server process of one run, in its own process group, on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _await_ready(self, path: str, log: Path) -> None:
        """Wait until ``path`` answers; on failure stop the process and re-raise."""
        try:
            _wait_http(self.proc, self.port, path, log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Idempotent: SIGTERM the group, wait, SIGKILL what is left."""
        _stop_group(self.proc)
        self.proc = None


class BaselineServer(_LocalServer):
    """A baseline: gunicorn serving ``benchmarks.baseline_app`` directly, no proxying.

    ``worker_class="asgi"`` serves the ASGI twin on gunicorn's native asgi worker with
    uvloop; any other class (``sync``, ``gthread``) serves the WSGI app."""

    def __init__(
        self, workdir: Path, workers: int, worker_class: str = "sync", threads: int = 1
    ) -> None:
        self.workdir = workdir
        self.workers = workers
        self.worker_class = worker_class
        self.threads = threads
        super().__init__()
        self.log_path = workdir / f"baseline-{worker_class}.log"

    app_spec = "benchmarks.baseline_app:asgi_application"  # the asgi twin
    env: dict[str, str] = {}

    def command(self) -> list[str]:
        """The gunicorn command line of this baseline."""
        cmd = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", self.worker_class,
            "--log-level", "warning",
            "--http-parser", "python",  # as Toru's gunicorn_conf.py (h1c drops big-body connections)
        ]  # fmt: skip
        if self.worker_class == "asgi":
            return [*cmd, "--asgi-loop", "uvloop", self.app_spec]
        return [*cmd, "--threads", str(self.threads), "benchmarks.baseline_app:application"]

    def start(self) -> BaselineServer:
        if self.proc is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("GUNICORN_CMD_ARGS", None)  # the command line says everything
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._await_ready("/api/plugins/route/bench-sdk/json", self.log_path)
        return self


class OneHopProxy(BaselineServer):
    """Scenario (p): ``benchmarks.one_hop_app`` on the asgi worker, forwarding to the plugin
    listening on ``plugin_socket`` (no supervisor, no Toru app)."""

    app_spec = "benchmarks.one_hop_app:application"

    def __init__(self, workdir: Path, workers: int, plugin_socket: str) -> None:
        super().__init__(workdir, workers, "asgi")
        self.env = {"ONE_HOP_PLUGIN_SOCKET": plugin_socket}
        self.log_path = workdir / "one-hop-proxy.log"


class CannedWeb(_LocalServer):
    """A second gunicorn with Toru's config for a home whose supervisor already runs, serving
    scenario (h): ``benchmarks.canned_app`` (plugin answers canned in the worker)."""

    def __init__(self, home: Path, workers: int, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.workers = workers
        self.env = dict(env or {})
        super().__init__()
        self.log_path = home / "canned-web.log"

    def start(self) -> CannedWeb:
        if self.proc is not None:
            return self
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(
            TORU_HOME=str(self.home),
            TORU_BIND=f"127.0.0.1:{self.port}",
            TORU_WORKERS=str(self.workers),
            TORU_SERVE_PARENT="1",
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        env.update(self.env)
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "toru" / "wsgi" / "gunicorn_conf.py"),
            "benchmarks.canned_app:application",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._await_ready("/healthz", self.log_path)
        return self


class NginxFront(_LocalServer):
    """Scenario (f): Debian nginx with the shipped site (deploy/nginx) in front of Toru over a
    Unix socket: upstream keep-alive, buffering and access log as operators run it."""

    def __init__(self, workdir: Path, upstream_socket: str, health_path: str = "/healthz") -> None:
        self.prefix = workdir / "nginx"
        self.upstream = upstream_socket
        self.health_path = health_path
        super().__init__()
        self.log_path = self.prefix / "stdout.log"

    def start(self) -> NginxFront:
        if self.proc is not None:
            return self
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        from tests.servers import shipped_nginx_conf

        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = shipped_nginx_conf(self.prefix, self.port, self.upstream)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [nginx, "-p", str(self.prefix), "-c", str(conf)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._await_ready(self.health_path, self.prefix / "error.log")
        return self


class ToruStack:
    """A fresh Toru home served by ``toru serve`` (through ``tests/servers.py``) plus an API token."""

    def __init__(
        self,
        home: Path,
        plugins: list[Path],
        enable: list[str],
        workers: int,
        bind: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.servers import ToruServer

        self.server = ToruServer(
            home, plugins=plugins, enable=enable, workers=workers, bind=bind, env=env
        )
        self.token: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int | None:
        return self.server.pid

    @property
    def home(self) -> Path:
        return self.server.home

    def start(self, timeout: float = 60.0) -> ToruStack:
        self.server.start(timeout=timeout)
        try:
            cookie, csrf = self.server.login()
            status, _, body = self.server.request(
                "POST", "/api/auth/tokens", {"name": "bench"}, cookie=cookie, csrf=csrf
            )
            if status not in (200, 201):
                raise RuntimeError(f"could not create an API token: {status} {body[:300]!r}")
            self.token = json.loads(body)["token"]
        except BaseException:
            self.stop()
            raise
        return self

    def wait_route(self, path: str, timeout: float = 30.0) -> None:
        """Wait until ``path`` answers 200 (the plugin is running)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            status, _, body = self.server.request("GET", path, token=self.token, timeout=5)
            if status == 200:
                return
            last = (status, body[:200])
            time.sleep(0.1)
        raise RuntimeError(f"{path} did not answer 200 within {timeout}s: {last}")

    def stop(self) -> None:
        """Idempotent (``ToruServer.stop``)."""
        self.server.stop()
