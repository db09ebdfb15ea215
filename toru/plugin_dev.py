"""``toru plugin dev PATH``: the plugin author's loop.

Builds the plugin with its own build script (``build.sh``, ``build.py`` or ``build.js`` in
PATH, which must leave exactly one ``*.binary`` there), installs it atomically into a dev home
(default ``PATH/.toru-dev``: a temporary name in ``plugins/``, then a rename), and runs
``toru serve`` there with relaxed timeouts and the plugin enabled. It then polls the source
tree's mtimes; after each change it rebuilds and hands the new binary to the supervisor's
``install`` op, which swaps the running plugin without downtime (the zero-downtime upgrade of
``toru plugins install``), and all along it streams the plugin's log to the terminal. Ctrl-C (SIGINT) or SIGTERM stops the server and everything it started, exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from toru.config import load_config
from toru.errors import ToruError
from toru.supervisor.launcher import MAX_UNIX_PATH, plugin_socket

__all__ = ["DevLoop", "cli", "find_build", "install", "source_snapshot"]

# Build scripts, in the order they are looked for, and how each is run.
BUILD_SCRIPTS = (
    ("build.sh", ["sh", "build.sh"]),
    ("build.py", [sys.executable, "build.py"]),
    ("build.js", ["node", "build.js"]),
)
# Not sources: build output, caches, the dev home itself, version control.
IGNORED_DIRS = frozenset(
    {".git", ".toru-dev", "target", "node_modules", "__pycache__", ".pytest_cache", ".venv"}
)
# Relaxed for a developer's machine (a debugger, a slow first build); the caller's env wins.
DEV_ENV = {
    "TORU_HTTP_TIMEOUT": "300",
    "TORU_START_TIMEOUT": "60",
    "TORU_METADATA_TIMEOUT": "60",
    "TORU_HEALTH_TIMEOUT": "60",
    "TORU_RESTART_BACKOFF": "0.5,1,2",
    "TORU_MAX_FAILURES": "1000",
    "TORU_WORKERS": "1",
    # every rebuild is a new binary: no approval per build in the author's own dev home
    "TORU_PIN_BINARIES": "false",
}
SERVE_READY = 120.0
STOP_GRACE = 20.0


class DevError(Exception):
    """Something the author has to fix (the message says what); the loop keeps running."""


def find_build(source: Path) -> list[str]:
    """The command that builds the plugin in ``source``."""
    for name, argv in BUILD_SCRIPTS:
        if (source / name).is_file():
            return argv
    names = ", ".join(n for n, _ in BUILD_SCRIPTS)
    raise DevError(f"{source} has no build script ({names}); `toru plugin new` makes one")


def source_snapshot(source: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (mtime_ns, size)}`` of every source file (polling is enough)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_DIRS]
        for name in filenames:
            if name.endswith(".binary") or name.startswith("."):
                continue  # build output and editors' or builders' temporary files
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.stat(path)
                out[os.path.relpath(path, source)] = (st.st_mtime_ns, st.st_size)
    return out


def build(source: Path, out: TextIO) -> Path:
    """Run the build script; the one ``*.binary`` it left in ``source``."""
    argv = find_build(source)
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=source, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DevError(
            f"build failed ({' '.join(argv)} exited {done.returncode}):\n"
            + (done.stdout + done.stderr).strip()[-4000:]
        )
    binaries = sorted(source.glob("*.binary"))
    if len(binaries) != 1:
        found = ", ".join(b.name for b in binaries) or "none"
        raise DevError(f"the build must leave exactly one *.binary in {source}; found {found}")
    out.write(f"[dev] built {binaries[0].name} in {time.monotonic() - t0:.1f} s\n")
    return binaries[0]


def read_metadata(binary: Path) -> dict[str, Any]:
    """``--metadata`` checked as the checker does (the message says what to change)."""
    from toru_plugin_api.check import metadata_from_stdout
    from toru_plugin_api.codec import ProtocolError

    done = subprocess.run([str(binary), "--metadata"], capture_output=True, timeout=60, check=False)
    try:
        if done.returncode != 0:
            raise ProtocolError(f"--metadata exited {done.returncode}: {done.stderr[-500:]!r}")
        return metadata_from_stdout(done.stdout).to_json()
    except ProtocolError as exc:
        raise DevError(f"{binary.name}: {exc}") from None


def install(binary: Path, plugins_dir: Path, plugin_id: str) -> Path:
    """Copy ``binary`` to ``plugins_dir/<id>.binary`` atomically, as ``toru plugins install``
    does (supervisor/install.py: a staged copy the supervisor ignores, fsync, rename), without
    its checks and pin: the dev home runs with pinning off and the build was just checked.

    NOTE: a rename replaces the directory entry, so it works while the old binary runs
    (``cp`` onto a running executable fails with "Text file busy") and no reader ever sees
    half a file.
    """
    from toru.supervisor.install import place, stage_copy

    target = plugins_dir / f"{plugin_id}.binary"
    staged, _ = stage_copy(binary, plugins_dir)
    try:
        place(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    return target


class LogTail:
    """Follows ``var/log/plugins/<id>.log`` from where it is now, across rotations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode = 0
        self._pos = 0
        self._partial = b""
        with contextlib.suppress(OSError):
            st = path.stat()
            self._inode, self._pos = st.st_ino, st.st_size

    def lines(self) -> list[str]:
        """New complete lines, formatted for a terminal."""
        try:
            st = self.path.stat()
        except OSError:
            return []
        if st.st_ino != self._inode or st.st_size < self._pos:  # rotated or truncated
            self._inode, self._pos, self._partial = st.st_ino, 0, b""
        if st.st_size == self._pos:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        self._pos += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        return [_format_log(ln.decode("utf-8", "replace")) for ln in complete if ln.strip()]


def _format_log(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict):
        return line
    ts = str(entry.pop("timestamp", ""))[11:23]
    level = str(entry.pop("level", "info")).upper()
    plugin = entry.pop("plugin", "")
    message = entry.pop("message", "")
    extra = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in entry.items())
    return f"{ts} {level:<5} [{plugin}] {message}" + (f"  {extra}" if extra else "")


@dataclass
class DevLoop:
    """One ``toru plugin dev`` run; ``run()`` returns the exit code."""

    source: Path
    home: Path | None  # None: PATH/.toru-dev (or a short one in /tmp if that is too deep)
    bind: str
    interval: float
    out: TextIO = sys.stdout

    def __post_init__(self) -> None:
        self.home_given = self.home is not None
        self.home = self.home if self.home is not None else self.source / ".toru-dev"
        self.serve: subprocess.Popen[bytes] | None = None
        self.plugin_id: str | None = None
        self.tail: LogTail | None = None
        self._stop: int | None = None

    # ------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        self.out.write(f"[dev] {text}\n")
        self.out.flush()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop = signum  # recorded here, acted on by the loop

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._stop is None and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def admin_password(self) -> str:
        """The dev home's admin password: made once, kept in ``var/dev-admin-password``."""
        path = self.home / "var" / "dev-admin-password"
        with contextlib.suppress(OSError):
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        return password

    def control(self, op: str, args: dict[str, Any] | None = None) -> Any:
        from toru.supervisor.client import ControlClient

        client = ControlClient(load_config(self.home).control_socket, timeout=120.0)
        try:
            return client.call(op, args or {})
        finally:
            client.close()

    # ------------------------------------------------------------------ steps

    def build(self) -> tuple[Path, dict[str, Any]]:
        """Build and read the new binary's metadata (nothing installed yet)."""
        binary = build(self.source, self.out)
        return binary, read_metadata(binary)

    def _socket_fits(self, plugin_id: str) -> bool:
        sock = plugin_socket(load_config(self.home).plugin_socket_dir, plugin_id)
        return len(str(sock).encode()) <= MAX_UNIX_PATH

    def _choose_home(self, plugin_id: str) -> None:
        """Keep the plugin's socket path under the Unix limit: a default home too deep for
        it moves to a short one in /tmp (stable per source directory); a given one is an
        error the author fixes with ``--home``."""
        if self._socket_fits(plugin_id):
            return
        if self.home_given or self.serve is not None:
            raise DevError(
                f"the plugin's socket under {self.home} would be longer than {MAX_UNIX_PATH} "
                "bytes (a Unix socket limit): pass --home with a shorter directory"
            )
        digest = hashlib.sha1(str(self.source).encode()).hexdigest()[:10]
        short = Path(tempfile.gettempdir()) / f"toru-dev-{digest}"
        self.say(f"{self.home} is too deep for the plugin's Unix socket path; dev home: {short}")
        self.home = short

    def install(self, binary: Path, meta: dict[str, Any]) -> None:
        self._choose_home(meta["id"])
        plugins_dir = load_config(self.home).plugins_dir
        if self.plugin_id is not None and meta["id"] != self.plugin_id:
            (plugins_dir / f"{self.plugin_id}.binary").unlink(missing_ok=True)
        install(binary, plugins_dir, meta["id"])
        self._follow(meta["id"])

    def _follow(self, plugin_id: str) -> None:
        """The plugin the loop watches (and whose log it streams) is now ``plugin_id``."""
        if plugin_id != self.plugin_id:
            self.plugin_id = plugin_id
            self.tail = LogTail(load_config(self.home).plugin_log_dir / f"{plugin_id}.log")

    def start_server(self, meta: dict[str, Any]) -> None:
        from toru.supervisor.plugin_state_file import set_enabled

        config = load_config(self.home)
        set_enabled(config.state_file, meta["id"], True, disabled_reason=None)
        env = dict(os.environ)
        for key, value in DEV_ENV.items():
            env.setdefault(key, value)
        env["TORU_ADMIN_PASSWORD"] = password = self.admin_password()
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = config.log_dir / "serve.out"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            self.serve = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "toru.cli",
                    "serve",
                    "--home",
                    str(self.home),
                    "--bind",
                    self.bind,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            )
        url = f"http://{self.bind}"
        deadline = time.monotonic() + SERVE_READY
        while not _healthy(url):
            if self.serve.poll() is not None or time.monotonic() > deadline or self._stop:
                tail = log.read_text(errors="replace")[-3000:]
                raise DevError(f"toru serve did not come up (output in {log}):\n{tail}")
            time.sleep(0.2)
        self.say(f"Toru is serving {self.home} (server output: {log})")
        self.say(f"UI:       {url}/   log in as admin, password {password}")
        self.say(
            f"plugin:   {url}/api/plugins/route{meta['route']}/  ({meta['id']} {meta['version']})"
        )
        self.say("saving a file under the source rebuilds and restarts it; Ctrl-C stops")

    def rebuild(self) -> None:
        """Build; if that worked, hand the new binary to the running supervisor's ``install``
        op (the path of ``toru plugins install``: staged copy, ``--metadata`` check, atomic
        rename), which swaps a running plugin without downtime: the new process starts beside
        the old one and takes over once it answers. A failed build or metadata error leaves
        the old version running."""
        self.say("change seen: rebuilding")
        try:
            binary, meta = self.build()
            old = self.plugin_id
            if old is not None and old != meta["id"]:  # the author renamed the plugin
                with contextlib.suppress(ToruError):  # already gone is fine
                    self.control("disable", {"plugin": old})
                (load_config(self.home).plugins_dir / f"{old}.binary").unlink(missing_ok=True)
                self.control("rescan")  # forget it, or its route would clash with the new one
            result = self.control("install", {"path": str(binary.resolve()), "enable": True})
        except DevError as exc:
            self.say(f"{exc}\n[dev] the running version stays; fix it and save")
            return
        except ToruError as exc:
            self.say(f"could not restart the plugin: {exc.message}")
            return
        self._follow(meta["id"])
        info = result.get("plugin") or {}
        self.say(f"restarted {meta['id']} {meta['version']}: {info.get('state')}")

    # ------------------------------------------------------------------ driver

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        self.say(f"watching {self.source}")
        try:
            meta = self._first_build()
            if meta is None:
                return 0
            self.start_server(meta)
            seen = source_snapshot(self.source)
            while self._stop is None:
                self._print_logs()
                if self.serve is not None and self.serve.poll() is not None:
                    self.say(f"toru serve exited with {self.serve.returncode}; stopping")
                    return 1
                now = source_snapshot(self.source)
                if now != seen:
                    seen = now
                    self.rebuild()
                self._sleep(self.interval)
            self._print_logs()
            return 0
        except DevError as exc:
            self.say(str(exc))
            return 1
        finally:
            self.stop_server()
            self._print_logs()  # the plugin's last words

    def _first_build(self) -> dict[str, Any] | None:
        """Build until one succeeds (fix the code, save, it retries); None if stopped."""
        while self._stop is None:
            seen = source_snapshot(self.source)
            try:
                binary, meta = self.build()
                self.install(binary, meta)
                return meta
            except DevError as exc:
                self.say(f"{exc}\n[dev] fix it and save; waiting for a change")
            while self._stop is None and source_snapshot(self.source) == seen:
                self._sleep(self.interval)
        return None

    def _print_logs(self) -> None:
        if self.tail is not None:
            for line in self.tail.lines():
                self.out.write(line + "\n")
            self.out.flush()

    def stop_server(self) -> None:
        """SIGTERM ``toru serve`` (it stops gunicorn and the plugins), wait, then SIGKILL
        its process group. Safe to call twice."""
        proc, self.serve = self.serve, None
        if proc is None:
            return
        if proc.poll() is None:
            self.say("stopping Toru")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of its group that outlived it


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def cli(args: argparse.Namespace) -> int:
    """``toru plugin dev PATH [--home H] [--bind HOST:PORT] [--interval S]``."""
    source = Path(args.path).resolve()
    if not source.is_dir():
        print(f"toru plugin dev: {args.path} is not a directory", file=sys.stderr)
        return 2
    home = Path(args.home).resolve() if args.home else None
    return DevLoop(source, home, args.bind, args.interval).run()
