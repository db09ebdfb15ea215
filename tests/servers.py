"""End-to-end harness: a real ``toru serve`` (supervisor + gunicorn) in its own process group.

Every tier's end-to-end tests use this, so its interface is a cross-team contract
(see the shared contracts): ``ToruServer(home, plugins, enable, workers, bind, env,
admin_password)``, ``start()``, ``stop()``, ``url``, ``login()``, ``request()``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import timing

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket (for ``bind="unix:/path"``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._unix_path)
        self.sock = s


class ToruServer:
    """A ``toru serve`` process for tests; ``stop()`` leaves no process behind.

    The server runs in its own session (process group), so ``stop()`` can always kill
    whatever is left of the group after the polite SIGTERM.
    """

    def __init__(
        self,
        home: Path,
        plugins: Iterable[Path] = (),
        enable: Iterable[str] = (),
        workers: int = 2,
        bind: str | None = None,
        env: dict | None = None,
        admin_password: str = "admin-pass-123",
    ) -> None:
        self.home = Path(home)
        self.plugins = [Path(p) for p in plugins]
        self.enable = list(enable)
        self.workers = workers
        self.bind = bind or f"127.0.0.1:{free_port()}"
        self.env = dict(env or {})
        self.admin_password = admin_password
        self.proc: subprocess.Popen | None = None
        self.log_path = self.home / "serve.out"
        self._log = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL (``http://host:port``); for a Unix bind ``http://localhost``."""
        if self.bind.startswith("unix:"):
            return "http://localhost"
        return f"http://{self.bind}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["TORU_ADMIN_PASSWORD"] = self.admin_password
        env.update(timing.product_env())  # generous, scaled; a test's own env wins
        env.update({k: str(v) for k, v in self.env.items()})
        return env

    def toru(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run ``toru ARGS --home`` style CLI commands against this home; returns stdout."""
        cp = subprocess.run(
            [sys.executable, "-m", "toru.cli", *args],
            cwd=ROOT,
            env=self.child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and cp.returncode != 0:
            raise RuntimeError(f"toru {' '.join(args)} failed ({cp.returncode}): {cp.stderr}")
        return cp.stdout

    def start(self, timeout: float = 30, healthz: int = 200) -> ToruServer:
        """Install plugins, enable ids, run ``toru serve``, wait for ``/healthz`` to answer
        ``healthz`` (200; a test of an unhealthy store waits for its 503)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        pdir = self.home / "plugins"
        pdir.mkdir(exist_ok=True)
        for p in self.plugins:
            dst = pdir / p.name
            shutil.copy2(p, dst)
            dst.chmod(0o755)
        for pid in self.enable:
            self.toru("plugins", "--home", str(self.home), "enable", pid)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "toru.cli",
            "serve",
            "--home",
            str(self.home),
            "--bind",
            self.bind,
            "--workers",
            str(self.workers),
        ]
        timeout = timing.scaled(timeout)
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.child_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.output()
                self.stop()
                raise RuntimeError(f"toru serve exited with {self.proc.returncode}:\n{out}")
            try:
                status, _, body = self.request("GET", "/healthz", timeout=2)
                if status == healthz and (status == 200 or b"store_unavailable" in body):
                    return self
                last = status
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        out = self.output()
        self.stop()
        raise RuntimeError(f"toru serve not healthy after {timeout}s ({last}):\n{out}")

    def output(self) -> str:
        """What ``toru serve`` printed so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole group. Idempotent; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Whatever is left in the group (there should be nothing) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def __enter__(self) -> ToruServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        if self.bind.startswith("unix:"):
            return _UnixHTTPConnection(self.bind[5:], timeout)
        host, port = self.bind.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        cookie: str | None = None,
        csrf: str | None = None,
        headers: dict | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request; ``body`` may be bytes, str or a JSON-able object.

        Returns ``(status, headers, body)``; header names are lower-cased.
        """
        h: dict[str, str] = {}
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = f"Bearer {token}"
        if cookie:
            h["Cookie"] = cookie
        if csrf:
            h["X-CSRF-Token"] = csrf
        h.update(headers or {})
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
            out_headers: dict[str, str] = {}
            for k, v in resp.getheaders():
                k = k.lower()
                out_headers[k] = f"{out_headers[k]}, {v}" if k in out_headers else v
            return resp.status, out_headers, payload
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """``request`` and parse the body as JSON (None when empty)."""
        status, _, data = self.request(method, path, body, **kw)
        return status, (json.loads(data) if data else None)

    def login(self, username: str = "admin", password: str | None = None) -> tuple[str, str]:
        """Log in; returns ``(cookie_header, csrf_token)`` for ``request(cookie=, csrf=)``."""
        pw = self.admin_password if password is None else password
        status, headers, data = self.request(
            "POST", "/api/auth/login", {"username": username, "password": pw}
        )
        if status != 200:
            raise RuntimeError(f"login as {username} failed: {status} {data!r}")
        cookie = headers.get("set-cookie", "").split(";", 1)[0]
        return cookie, json.loads(data)["csrf_token"]

    def add_user(
        self, admin: tuple[str, str], username: str, password: str, role: str = "user"
    ) -> tuple[str, str]:
        """Create a user through ``POST /api/users`` as ``admin`` (a ``login()``), then log
        in as them; returns their ``(cookie_header, csrf_token)``."""
        body = {"username": username, "password": password, "role": role}
        status, answer = self.json("POST", "/api/users", body, cookie=admin[0], csrf=admin[1])
        if status != 201:
            raise RuntimeError(f"creating user {username} failed: {status} {answer!r}")
        return self.login(username, password)


NGINX_DEPLOY = ROOT / "deploy" / "nginx"


def shipped_nginx_conf(
    prefix: Path, port: int, sock: str, keepalive_timeout: str | None = None
) -> Path:
    """The shipped site (deploy/nginx/toru.conf and toru_proxy_params) with local paths, in a
    minimal nginx.conf whose temp dirs are under ``prefix``: what the nginx tests and the
    benchmark's scenario (f) run, so both measure the deployment operators get."""
    site = (NGINX_DEPLOY / "toru.conf").read_text()
    if keepalive_timeout is not None:
        assert site.count("keepalive_timeout 1s;") == 1
        site = site.replace("keepalive_timeout 1s;", f"keepalive_timeout {keepalive_timeout};")
    site = site.replace("unix:/run/toru/web.sock", f"unix:{sock}")
    site = site.replace("/opt/toru/webapp", str(ROOT / "webapp"))
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("listen [::]:80;", "")
    site = site.replace("/etc/nginx/toru_proxy_params", str(NGINX_DEPLOY / "toru_proxy_params"))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / d).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    {site}
}}
"""
    )
    return conf
