"""Protocol v1 conformance checker: ``toru plugin check PATH`` / ``python -m toru_plugin_api.check PATH``.

Runs a plugin executable the way the host does and checks, in order: ``--metadata``, the
socket appearing within 5 s, ``init``, a request answered with the same ``request_id``,
pipelined requests, a second connection (when ``multi_connection`` is declared), a
non-UTF-8 body in a binary frame answered in one (when ``binary_bodies`` is declared),
``/bundle.js`` (when the plugin has a UI), the health probe, behaviour on a malformed and on
an oversized frame, recovery afterwards, exit within 5 s of ``shutdown``, and how it behaves
when started by hand. Metadata and every reply are validated against the protocol's JSON
Schema (``protocol.schema.json``). A plugin written in the original style (one connection at
a time, in-order answers, ``payload.payload``) passes.

A failed check prints the tail of the plugin's stderr under it; ``-v`` prints all of it and
every message exchanged. The metadata and start waits follow the host's settings
``TORU_METADATA_TIMEOUT`` and ``TORU_START_TIMEOUT`` (5 s each by default).

Needs no host install: standard library and ``toru_plugin_api`` only. Exit code 0 when
nothing failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import schema
from .blocking import Channel
from .codec import BODY, HEADER, ProtocolError, encode, encode_payload, frame_body
from .messages import (
    BINARY_BODIES,
    HttpRequest,
    HttpResponse,
    PluginMetadata,
    host_init,
    http_request_message,
    lifecycle_shutdown,
    metadata_output_json,
    parse_message,
    validate_http_reply,
)
from .testing import KvDouble, connect_unix

__all__ = ["Check", "PluginChecker", "cli", "main"]

START_TIMEOUT = 5.0
SHORT_TIMEOUT = 2.0
STDERR_TAIL_LINES = 12

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"


@dataclass
class Check:
    name: str
    status: str
    detail: str


class _Abort(Exception):
    """A check failed in a way that makes the following checks meaningless."""


class _Conn(Channel):
    """One blocking connection to the plugin, requests matched by ``request_id``; every
    message is kept in ``log``."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(connect_unix(path, timeout))
        self.log: list[str] = []

    def send(self, msg: Any, timeout: float | None = None, body: bytes | None = None) -> None:
        self.log.append(f"-> {_shown(msg, body)}")
        rid = msg.get("request_id")
        if rid is not None:
            self.expect(str(rid))
        super().send(msg, timeout, body)

    def send_all(self, msgs: list[dict[str, Any]]) -> None:
        """Pipeline: every message in one write."""
        for msg in msgs:
            self.log.append(f"-> {json.dumps(msg)[:300]}")
            self.expect(str(msg["request_id"]))
        self.send_bytes(b"".join(encode(m) for m in msgs))

    def reply(self, rid: str, timeout: float) -> Any:
        """The message carrying ``rid``; raises TimeoutError, EOFError or ProtocolError."""
        try:
            msg = super().reply(rid, timeout)
        except EOFError:
            raise EOFError("the plugin closed the connection") from None
        self.log.append(f"<- {_shown(msg, frame_body(msg))}")
        return msg


class PluginChecker:
    """Runs the checks against one executable; ``run()`` returns the list of ``Check``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        verbose: bool = False,
        out: TextIO | None = None,
        *,
        timeout: float = START_TIMEOUT,
    ):
        # NOTE: ``timeout`` scales every wait (start, reply, exit); tests pass a small one.
        # The metadata and socket waits are the host's settings when they are set.
        self.reply_timeout = self.exit_timeout = timeout
        self.metadata_timeout = _env_seconds("TORU_METADATA_TIMEOUT", timeout)
        self.start_timeout = _env_seconds("TORU_START_TIMEOUT", timeout)
        self.short_timeout = min(SHORT_TIMEOUT, timeout)
        self.shown = os.fspath(path)
        # NOTE: absolute, so "./x.binary" and a bare "x.binary" run that file instead of
        # being looked up on PATH by exec.
        self.path = Path(os.path.abspath(path))
        self.verbose = verbose
        self.out = out or sys.stdout
        self.results: list[Check] = []
        self.metadata: PluginMetadata | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="toru-chk-", dir="/tmp"))
        self.socket_path = str(self.workdir / "p.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.kv = KvDouble()
        self._rid = 0
        self._conns: list[_Conn] = []
        self._stderr_kept: str | None = None  # read before the work directory goes
        self._metadata_stderr = ""

    # ------------------------------------------------------------------ helpers

    def record(self, name: str, status: str, detail: str) -> None:
        """Report one check; a failure shows the tail of what the plugin wrote on stderr."""
        self.results.append(Check(name, status, detail))
        self.out.write(f"  {status:<5} {name:<18} {detail}\n")
        if status == FAIL:
            self.out.write(_tail(self.stderr_text() if self.proc else self._metadata_stderr))
        self.out.flush()

    def rid(self) -> str:
        self._rid += 1
        return f"check-{self._rid}"

    def connect(self) -> _Conn:
        c = _Conn(self.socket_path, self.reply_timeout)
        self._conns.append(c)
        return c

    def http(
        self, conn: _Conn, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[str, HttpResponse]:
        """Send one request and return its reply, checked against the protocol schema."""
        rid = self.rid()
        conn.send(http_request_message(rid, HttpRequest(method, path, headers or {})))
        return rid, _http_reply(conn.reply(rid, self.reply_timeout))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        if self._stderr_kept is not None:
            return self._stderr_kept
        try:
            return (self.workdir / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ checks

    def check_executable(self) -> None:
        p = self.path
        if not p.is_file():
            self.record("executable", FAIL, f"{self.shown} is not a file")
            raise _Abort
        if not os.access(p, os.X_OK):
            self.record("executable", FAIL, f"{self.shown} is not executable (chmod +x)")
            raise _Abort
        self.record("executable", PASS, f"{self.shown}, {p.stat().st_size} bytes")

    def check_metadata(self) -> None:
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                [str(self.path), "--metadata"],
                capture_output=True,
                timeout=self.metadata_timeout,
                stdin=subprocess.DEVNULL,
                env=_clean_env(),
            )
        except subprocess.TimeoutExpired as exc:
            self._metadata_stderr = (exc.stderr or b"").decode(errors="replace")
            self.record(
                "metadata",
                FAIL,
                f"--metadata did not finish within {self.metadata_timeout:g} s; if the plugin "
                "is only slow, raise TORU_METADATA_TIMEOUT (the host's supervisor.metadata_timeout)",
            )
            raise _Abort from None
        except OSError as exc:
            self.record("metadata", FAIL, f"cannot execute: {exc}")
            raise _Abort from None
        self._metadata_stderr = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            self.record("metadata", FAIL, f"--metadata exited with {done.returncode}")
            raise _Abort
        try:
            self.metadata = metadata_from_stdout(done.stdout)
        except ProtocolError as exc:
            self.record("metadata", FAIL, str(exc))
            raise _Abort from None
        md = self.metadata
        self.record(
            "metadata",
            PASS,
            f"{md.id} {md.version} {md.name!r}, route {md.route} ({time.monotonic() - t0:.2f} s)",
        )

    def check_start(self) -> None:
        env = _clean_env()
        env.update(
            TORU_PLUGIN_SOCKET=self.socket_path,
            TORU_PLUGIN_ID=self.metadata.id if self.metadata else "",
            TORU_INSTANCE_ID="toru-check-instance",
            TORU_KV_FD=str(self.kv.plugin_fd),
        )
        with (
            open(self.workdir / "stderr.log", "wb") as err,
            open(self.workdir / "stdout.log", "wb") as out,
        ):
            self.proc = subprocess.Popen(
                [str(self.path)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(self.kv.plugin_fd,),
                start_new_session=True,
            )
        self.kv.plugin_sock.close()
        self.kv.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.start_timeout:
            if os.path.exists(self.socket_path):
                break
            if not self.alive():
                self.record("socket", FAIL, f"exited with {self.proc.returncode} before listening")
                raise _Abort
            time.sleep(0.01)
        else:
            self.record(
                "socket",
                FAIL,
                f"no socket at TORU_PLUGIN_SOCKET within {self.start_timeout:g} s; if the plugin "
                "is only slow to start, raise TORU_START_TIMEOUT (the host's supervisor.start_timeout)",
            )
            raise _Abort
        took = time.monotonic() - t0
        mode = stat.S_IMODE(os.stat(self.socket_path).st_mode)
        self.record("socket", PASS, f"listening after {took:.2f} s")
        if mode & 0o077:
            self.record(
                "socket mode",
                WARN,
                f"socket is mode {mode:04o}; create it 0600 (umask 0177 before bind) so other "
                "users cannot send it requests",
            )
        else:
            self.record("socket mode", PASS, f"{mode:04o}")

    def check_requests(self) -> _Conn:
        try:
            conn = self.connect()
        except OSError as exc:
            self.record("connect", FAIL, f"cannot connect: {exc}")
            raise _Abort from None
        conn.send(
            host_init("toru-check-instance", self.socket_path, str(self.workdir / "plugin.log"))
        )
        self.record("init", PASS, "init sent (no reply expected)")
        try:
            rid, resp = self.http(conn, "GET", "/")
        except (TimeoutError, EOFError, OSError, ProtocolError) as exc:
            self.record("request", FAIL, f"GET / was not answered properly: {exc}{self._died()}")
            raise _Abort from None
        if resp.status >= 500:
            body = resp.body_bytes.decode(errors="replace")[:300]
            self.record("request", FAIL, f"GET / answered {resp.status}: {body}{self._died()}")
            raise _Abort
        self.record("request", PASS, f"GET / answered {resp.status} with request_id {rid}")

        rids = [self.rid() for _ in range(3)]
        paths = ["/", "/toru-check-missing", "/"]
        conn.send_all(
            [
                http_request_message(r, HttpRequest("GET", p))
                for r, p in zip(rids, paths, strict=True)
            ]
        )
        try:
            statuses = [_http_reply(conn.reply(r, self.reply_timeout)).status for r in rids]
        except (TimeoutError, EOFError, OSError, ProtocolError) as exc:
            self.record(
                "pipelining", FAIL, f"3 pipelined requests not all answered by request_id: {exc}"
            )
            raise _Abort from None
        self.record("pipelining", PASS, f"3 pipelined requests answered by request_id ({statuses})")
        return conn

    def check_multi_connection(self, conn: _Conn) -> None:
        """A plugin that declares ``multi_connection`` must answer a second connection, with
        no ``init`` on it, while the first stays open: the host's workers rely on it."""
        if self.metadata is None or not self.metadata.multi_connection:
            self.record("multi-connection", SKIP, "not declared: the host keeps one connection")
            return
        try:
            second = self.connect()
            try:
                self.http(second, "GET", "/")
                self.http(conn, "GET", "/")  # the first is still served too
            finally:
                second.close()
        except (TimeoutError, EOFError, OSError, ProtocolError) as exc:
            self.record(
                "multi-connection",
                FAIL,
                f"declares multi_connection but a second connection was not served: {exc}",
            )
            return
        self.record("multi-connection", PASS, "a second connection is served alongside the first")

    def check_binary_bodies(self, conn: _Conn) -> None:
        """A plugin that declares ``binary_bodies`` gets a non-UTF-8 body as the raw tail of
        a binary frame and must answer it in a binary frame (any status)."""
        if self.metadata is None or not self.metadata.binary_bodies:
            self.record("binary-bodies", SKIP, "not declared: bodies travel as JSON strings")
            return
        rid = self.rid()
        req = HttpRequest(
            "POST", "/toru-check-binary", {"Content-Type": "application/octet-stream"}
        )
        try:
            conn.send(http_request_message(rid, req, binary=True), body=_BINARY_PROBE)
            msg = conn.reply(rid, self.reply_timeout)
            resp = _http_reply(msg)
        except (TimeoutError, EOFError, OSError, ProtocolError) as exc:
            self.record(
                "binary-bodies", FAIL, f"a request in a binary frame was not answered: {exc}"
            )
            return
        if frame_body(msg) is None:
            self.record(
                "binary-bodies",
                FAIL,
                f"declares {BINARY_BODIES} but answered a binary frame with a JSON body"
                " (answer in the form you were asked: docs/plugins/PROTOCOL.md section 3)",
            )
            return
        self.record(
            "binary-bodies",
            PASS,
            f"a {len(_BINARY_PROBE)}-byte non-UTF-8 body in a binary frame answered in one"
            f" ({resp.status}, {len(resp.body_bytes)} body bytes)",
        )

    def check_bundle(self, conn: _Conn) -> None:
        try:
            _, resp = self.http(conn, "GET", "/bundle.js")
        except (TimeoutError, EOFError, OSError, ProtocolError) as exc:
            self.record("bundle", FAIL, f"GET /bundle.js not answered: {exc}")
            raise _Abort from None
        body = resp.body_bytes
        if resp.status == 404:
            self.record("bundle", SKIP, "GET /bundle.js is 404: the plugin has no UI")
        elif resp.status != 200 or not body:
            self.record(
                "bundle", FAIL, f"GET /bundle.js answered {resp.status} with {len(body)} bytes"
            )
        elif b"ToruPlugins" not in body:
            self.record(
                "bundle", WARN, f"{len(body)} bytes, but it never mentions window.ToruPlugins"
            )
        else:
            self.record(
                "bundle", PASS, f"{len(body)} bytes of JavaScript registering window.ToruPlugins"
            )

    def check_probe(self, conn: _Conn) -> None:
        try:
            _, resp = self.http(conn, "GET", "/health", {"X-Toru-Probe": "1"})
        except (TimeoutError, EOFError, OSError, ProtocolError) as exc:
            self.record("health probe", FAIL, f"GET /health (probe) not answered: {exc}")
            raise _Abort from None
        self.record(
            "health probe", PASS, f"answered {resp.status} (any well-formed reply is healthy)"
        )

    def _bad_input(self, name: str, data: bytes) -> None:
        try:
            conn = self.connect()
            conn.send_bytes(data)
        except OSError as exc:
            died = "" if self.alive() else f" (the plugin had exited with {self.proc.returncode})"
            self.record(name, FAIL, f"could not connect to send it: {exc}{died}")
            raise _Abort from None
        closed = conn.wait_closed(self.short_timeout)
        conn.close()
        if closed:
            # NOTE: a plugin that crashes on bad input also "closes the connection"; give
            # its exit a moment to show before calling it a clean close.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.3)
        if not self.alive():
            self.record(
                name,
                FAIL,
                f"the plugin died (exit {self.proc.returncode}); it must close the connection and go on",
            )
            raise _Abort
        if closed:
            self.record(name, PASS, "connection closed, plugin still running")
        else:
            self.record(
                name,
                WARN,
                f"plugin still running but kept the connection open for {self.short_timeout:g} s",
            )

    def check_bad_frames(self) -> None:
        self._bad_input("malformed frame", encode_payload(b'{"type": "http", not json'))
        self._bad_input("oversized frame", HEADER.pack(0xFFFFFFF0) + b"{}")

    def check_recovery(self) -> _Conn:
        try:
            conn = self.connect()
            self.http(conn, "GET", "/")
        except (TimeoutError, EOFError, OSError, ProtocolError) as exc:
            self.record("recovery", FAIL, f"no answer on a new connection after bad input: {exc}")
            raise _Abort from None
        self.record("recovery", PASS, "a new connection is served after the bad frames")
        return conn

    def check_shutdown(self, conn: _Conn) -> None:
        conn.send(lifecycle_shutdown())
        t0 = time.monotonic()
        try:
            code = self.proc.wait(self.exit_timeout)
        except subprocess.TimeoutExpired:
            self.record("shutdown", FAIL, f"still running {self.exit_timeout:g} s after shutdown")
            return
        took = time.monotonic() - t0
        if code == 0:
            self.record("shutdown", PASS, f"exited 0 after {took:.2f} s")
        else:
            self.record("shutdown", WARN, f"exited with {code} after {took:.2f} s (0 expected)")
        if os.path.exists(self.socket_path):
            self.record("cleanup", WARN, "left its socket file behind")

    def check_logs(self) -> None:
        lines = [ln for ln in self.stderr_text().splitlines() if ln.strip()]
        structured = 0
        for ln in lines:
            with contextlib.suppress(ValueError):
                obj = json.loads(ln)
                if isinstance(obj, dict) and "level" in obj and "message" in obj:
                    structured += 1
        if not lines:
            self.record("logs", PASS, "nothing on stderr")
        elif structured == len(lines):
            self.record("logs", PASS, f"{structured} structured JSON log lines")
        else:
            self.record(
                "logs",
                WARN,
                f"{len(lines) - structured} of {len(lines)} stderr lines are not JSON logs (kept as warn)",
            )

    def check_manual_start(self) -> None:
        try:
            done = subprocess.run(
                [str(self.path)],
                capture_output=True,
                timeout=self.start_timeout,
                stdin=subprocess.DEVNULL,
                env=_clean_env(),
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            self.record(
                "started by hand",
                WARN,
                "without TORU_PLUGIN_SOCKET it hangs instead of explaining and exiting",
            )
            return
        if done.returncode != 0 and done.stderr.strip():
            self.record(
                "started by hand",
                PASS,
                f"explains and exits {done.returncode} without TORU_PLUGIN_SOCKET",
            )
        else:
            self.record(
                "started by hand",
                WARN,
                f"without TORU_PLUGIN_SOCKET it exits {done.returncode} and says nothing on stderr",
            )

    # ------------------------------------------------------------------ driver

    def run(self) -> list[Check]:
        self.out.write(f"Checking {self.shown}\n")
        try:
            self.check_executable()
            self.check_metadata()
            self.check_start()
            conn = self.check_requests()
            self.check_multi_connection(conn)
            self.check_binary_bodies(conn)
            self.check_bundle(conn)
            self.check_probe(conn)
            conn.close()  # an original-style plugin serves one connection at a time
            self.check_bad_frames()
            conn = self.check_recovery()
            self.check_shutdown(conn)
            self.check_logs()
            self.check_manual_start()
        except _Abort:
            pass
        finally:
            self.cleanup()
        if self.verbose:
            self.out.write(
                "\n--- plugin stderr ---\n" + (self.stderr_text()[-4000:] or "(empty)\n")
            )
            for i, c in enumerate(self._conns):
                self.out.write(f"--- connection {i + 1} ---\n" + "\n".join(c.log) + "\n")
        failed = sum(1 for c in self.results if c.status == FAIL)
        warned = sum(1 for c in self.results if c.status == WARN)
        passed = sum(1 for c in self.results if c.status == PASS)
        verdict = "FAIL" if failed else "PASS"
        self.out.write(
            f"Result: {verdict} ({passed} checks passed, {failed} failed, {warned} warnings)\n"
        )
        return self.results

    def cleanup(self) -> None:
        for c in self._conns:
            c.close()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.kv.close()
        self._stderr_kept = self.stderr_text()  # for -v: the directory goes next
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _died(self) -> str:
        """A note for a failure message once the process is gone (its exit code), else ""."""
        if self.proc is None:
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(0.3)
        return "" if self.alive() else f" (the plugin exited with {self.proc.returncode})"

    @property
    def ok(self) -> bool:
        return bool(self.results) and not any(c.status == FAIL for c in self.results)


def metadata_from_stdout(out: bytes) -> PluginMetadata:
    """Validate what ``--metadata`` printed; a ``ProtocolError`` says what to change (the
    host's own words for stdout noise, ``metadata_output_json``)."""
    data = metadata_output_json(out)
    metadata = PluginMetadata.from_json(data)  # the host's rules, in the host's words
    try:
        schema.validate(data, "metadata")
    except schema.SchemaError as exc:
        raise ProtocolError(f"--metadata does not match the protocol schema: {exc}") from None
    return metadata


_BINARY_PROBE = bytes(range(256))[::-1] * 16  # 0xff first: never valid UTF-8


def _shown(msg: Any, body: bytes | None) -> str:
    """A message for the verbose log (a binary frame's body by its size)."""
    if body is not None and isinstance(msg, dict):
        msg = {k: v for k, v in msg.items() if k != BODY}
        return f"{json.dumps(msg)[:300]} + {len(body)} body bytes"
    return json.dumps(msg)[:300]


def _http_reply(msg: dict[str, Any]) -> HttpResponse:
    """An ``http`` reply checked against the schema, then parsed as the host does (a binary
    frame's JSON against the same schema, its body as it came)."""
    body = frame_body(msg)
    if body is not None:
        msg = {k: v for k, v in msg.items() if k != BODY}
    try:
        schema.validate(msg, "http_reply")
    except schema.SchemaError as exc:
        raise ProtocolError(f"reply does not match the protocol schema: {exc}") from None
    m = parse_message(msg)
    if m.type != "http":
        raise ProtocolError(f"reply has type {m.type!r}, expected 'http'")
    return validate_http_reply(m.payload, body)


def _tail(text: str) -> str:
    """The last lines the plugin wrote on stderr, indented under a failed check."""
    lines = [ln for ln in text.splitlines() if ln.strip()][-STDERR_TAIL_LINES:]
    if not lines:
        return "        (the plugin wrote nothing on stderr)\n"
    shown = "".join(f"        | {ln[:300]}\n" for ln in lines)
    return f"        plugin stderr, last {len(lines)} lines:\n{shown}"


def _env_seconds(name: str, default: float) -> float:
    """A host timeout setting from the environment, so the checker waits as the host does."""
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("TORU_PLUGIN_SOCKET", "TORU_KV_FD", "TORU_PLUGIN_ID", "TORU_INSTANCE_ID"):
        env.pop(k, None)
    return env


def check(
    path: str | os.PathLike[str],
    verbose: bool = False,
    out: TextIO | None = None,
    timeout: float = START_TIMEOUT,
) -> bool:
    """Run every check on ``path``, print the report, return True when nothing failed."""
    checker = PluginChecker(path, verbose, out, timeout=timeout)
    checker.run()
    return checker.ok


def cli(args: argparse.Namespace) -> int:
    """``toru plugin check PATH [-v]``."""
    return 0 if check(args.path, args.verbose) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toru_plugin_api.check",
        description="Check a Toru plugin executable against protocol v1.",
    )
    parser.add_argument("path")
    parser.add_argument("--verbose", "-v", action="store_true")
    return cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
