"""``toru serve``: one parent that owns the supervisor and the gunicorn master.

Why a parent of its own: gunicorn's arbiter reaps *every* child with ``waitpid(-1)``, so a
supervisor started from inside the arbiter would have its exit swallowed. Here both are
siblings under a small loop in the style of gunicorn's arbiter: signal handlers only queue
the signal and wake the loop (``signal.set_wakeup_fd``); the loop restarts whichever child
died (with a short backoff), and on SIGTERM/SIGINT stops gunicorn first (workers drain),
then the supervisor (plugins get ``shutdown``, SIGTERM, SIGKILL), and exits 0.

Both children get ``PR_SET_PDEATHSIG(SIGTERM)``, so a ``kill -9`` of this process still
takes them down (and they take down the workers and plugins), and each runs in its own
process group so a terminal's Ctrl-C reaches only this parent, which then stops things in
order.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from toru_plugin_api.codec import FrameReader, write_frame

from .config import Config, ConfigError, load_config
from .home_modes import tighten_home
from .osutil import die_with_parent
from .supervisor.restart_policy import RestartPolicy

GUNICORN_CONF = Path(__file__).resolve().parent / "wsgi" / "gunicorn_conf.py"
HELLO_NOTE_EVERY = 30.0  # seconds between "still waiting for the supervisor" notes
# The plugins' policy type with the web tier's numbers: a child that lived 10 s restarts
# without backoff; after 6 quick failures give up (exit 1) instead of crash-looping, like
# gunicorn does.
CHILD_POLICY = RestartPolicy(
    backoff=(0.2, 0.5, 1.0, 2.0, 5.0, 10.0), max_failures=6, reset_after=10.0
)


def _say(msg: str) -> None:
    print(f"toru serve: {msg}", flush=True)


# --------------------------------------------------------------------------- first admin


def ensure_first_admin(config: Config, quiet: bool = False) -> str | None:
    """Migrate the schema; with no users, create ``admin`` (DESIGN.md's first run).

    The password comes from ``TORU_ADMIN_PASSWORD``; else a random one is printed once and
    written to ``var/initial-admin-password`` (0600). Returns the password if it created one.
    """
    from .accounts import Accounts, write_initial_password
    from .store import Store

    store = Store(config.db_path)
    try:
        store.migrate()
        given = os.environ.get("TORU_ADMIN_PASSWORD") or None
        password = Accounts(store).ensure_first_admin(given)
    finally:
        store.close()
    if password is None:
        return None
    if given:
        if not quiet:
            _say("created user 'admin' with the password from TORU_ADMIN_PASSWORD")
    else:
        path = config.var_dir / "initial-admin-password"
        write_initial_password(path, password)
        _say(f"created user 'admin' with password: {password}")
        _say(f"(written to {path}, mode 0600; change it with `toru user passwd admin`)")
    return password


# --------------------------------------------------------------------------- control


def control_call(path: Path, op: str, args: dict | None = None, timeout: float = 5.0) -> Any:
    """One blocking control request (for start-up checks; workers use ControlClient)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        write_frame(s, {"v": 1, "id": 1, "op": op, "args": args or {}})
        reply = FrameReader(s).read()
    if not isinstance(reply, dict):
        raise ConnectionError("the supervisor closed the control connection")
    if not reply.get("ok"):
        from .errors import ToruError

        raise ToruError.from_dict(reply.get("error") or {})
    return reply.get("result")


# --------------------------------------------------------------------------- children


def _child_setup(parent_pid: int) -> None:
    """In the child before exec: own process group, die with the parent."""
    os.setpgid(0, 0)
    die_with_parent(signal.SIGTERM, parent_pid)


class Child:
    """A supervised child command; ``start`` and ``stop`` are idempotent."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive():
            return
        parent = os.getpid()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, preexec_fn=lambda: _child_setup(parent)
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def note_exit(self) -> float:
        """Record an unexpected exit; returns the delay before the restart."""
        uptime = time.monotonic() - self.started_at
        self.failures = CHILD_POLICY.failures_after_crash(self.failures, uptime)
        delay = CHILD_POLICY.delay(self.failures)
        self.restart_at = time.monotonic() + delay
        return delay

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self, grace: float) -> int | None:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL its process group."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            _say(f"{self.name} did not stop within {grace:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return self.proc.returncode


class ServeParent:
    """The ``toru serve`` loop (see the module docstring)."""

    def __init__(self, config: Config, *, enable_all: bool = False) -> None:
        self.config = config
        self.enable_all = enable_all
        self.signals: list[int] = []
        env = dict(os.environ)
        env.update(config.to_env())
        env["PROMETHEUS_MULTIPROC_DIR"] = str(config.metrics_dir)
        env["TORU_SERVE_PARENT"] = str(os.getpid())
        self.env = env
        py = sys.executable
        home = str(config.home)
        self.supervisor = Child(
            "supervisor", [py, "-m", "toru.cli", "supervisor", "--home", home], env
        )
        self.web = Child(
            "gunicorn",
            [py, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "toru.wsgi:application"],
            env,
        )

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> None:
        c = self.config
        for d in (c.home, c.var_dir, c.log_dir, c.plugins_dir, c.run_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)  # the supervisor opens run/
        for change in tighten_home(c):
            _say(f"warning: an existing home was too open; tightened {change}")
        # Stale files of a previous run would be merged into /metrics forever.
        shutil.rmtree(c.metrics_dir, ignore_errors=True)
        c.metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(c.metrics_dir)
        ensure_first_admin(c)

    def wait_supervisor(self) -> dict:
        """Wait for the supervisor's ``hello`` for as long as it runs.

        It opens its control socket before discovering plugins, so on a loaded machine this
        is the time of a Python start-up; giving up would only turn a slow start into an
        outage. Every ``HELLO_NOTE_EVERY`` seconds it says it is still waiting, and why.
        """
        t0 = time.monotonic()
        note_at = t0 + HELLO_NOTE_EVERY
        while True:
            if not self.supervisor.alive():
                raise RuntimeError(f"the supervisor exited with {self.supervisor.proc.returncode}")
            try:
                return control_call(self.config.control_socket, "hello", timeout=2.0)
            except (OSError, ConnectionError) as exc:
                if time.monotonic() >= note_at:
                    note_at += HELLO_NOTE_EVERY
                    waited = time.monotonic() - t0
                    _say(f"still waiting for the supervisor after {waited:.0f}s ({exc})")
            self._sleep(0.05)

    def wait_web(self, timeout: float = 60.0) -> bool:
        """True once the bind address accepts connections; False if gunicorn exits first."""
        bind = self.config.bind
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.web.alive():
            try:
                if bind.startswith("unix:"):
                    with socket.socket(socket.AF_UNIX) as s:
                        s.settimeout(1)
                        s.connect(bind[5:])
                else:
                    host, _, port = bind.rpartition(":")
                    host = host.strip("[]") or "127.0.0.1"
                    if host in ("0.0.0.0", "::"):
                        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
                    socket.create_connection((host, int(port)), timeout=1).close()
                return True
            except (OSError, ValueError):
                self._sleep(0.1)
        return self.web.alive()

    def enable_everything(self) -> None:
        """``--enable-all``: once the first discovery is done, enable every valid plugin."""
        try:
            path = self.config.control_socket
            while not control_call(path, "hello", timeout=10).get("discovery_done"):
                if not self.supervisor.alive():
                    raise RuntimeError("the supervisor exited")
                self._sleep(0.1)
            plugins = control_call(self.config.control_socket, "list", timeout=10)
            for p in plugins:
                if p.get("state") == "discovering":
                    _say(f"not enabling {p['id']}: {p.get('error') or 'no metadata yet'}")
                elif not p.get("enabled") and p.get("state") != "invalid":
                    control_call(
                        self.config.control_socket, "enable", {"plugin": p["id"]}, timeout=30
                    )
                    _say(f"enabled plugin {p['id']}")
        except Exception as exc:  # the server still runs; say what went wrong
            _say(f"--enable-all failed: {exc}")

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _install_signals(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wake_r = r
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)

    def _sleep(self, timeout: float) -> None:
        """Wait for a signal or the timeout, whichever comes first."""
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)

    # ------------------------------------------------------------------ loop

    def banner(self) -> None:
        b = self.config.bind
        where = f"unix socket {b[5:]}" if b.startswith("unix:") else f"http://{b}/"
        _say(f"Toru is serving on {where} (home {self.config.home})")
        _say(f"log in at {where} as 'admin'" if not b.startswith("unix:") else "log in as 'admin'")

    def bind_problem(self) -> str | None:
        """Why gunicorn could not bind the TCP address (checked up front: gunicorn itself
        retries for seconds and toru serve would then restart it), or None."""
        bind = self.config.bind
        if bind.startswith("unix:"):
            return None
        host, _, port = bind.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            family, _, _, _, addr = infos[0]
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(addr)
        except (OSError, ValueError) as exc:
            return f"cannot bind {bind}: {exc}"
        return None

    def run(self) -> int:
        problem = self.bind_problem()
        if problem:
            _say(problem)
            return 1
        self._install_signals()
        self.prepare()
        self.supervisor.start()
        try:
            hello = self.wait_supervisor()
        except RuntimeError as exc:
            _say(f"cannot start: {exc}")
            self.supervisor.stop(self.config.shutdown_grace + 5)
            return 1
        _say(f"supervisor pid {hello.get('pid')} is up")
        if self.enable_all:
            self.enable_everything()
        self.web.start()
        if not self.wait_web():
            _say(f"gunicorn could not start on {self.config.bind} (see its output above)")
            self.shutdown()
            return 1
        self.banner()
        stopping = False
        while not stopping:
            self._sleep(0.5)
            while self.signals:
                sig = self.signals.pop(0)
                if sig in (signal.SIGTERM, signal.SIGINT):
                    stopping = True
                elif sig == signal.SIGHUP:
                    self.web.signal(signal.SIGHUP)  # gunicorn reloads its workers
            if stopping:
                break
            for child in (self.supervisor, self.web):
                if child.restart_at is None and not child.alive():
                    code = child.proc.returncode if child.proc else None
                    delay = child.note_exit()
                    if child is self.supervisor:
                        self._mark_dead(child.pid)
                    if CHILD_POLICY.gives_up(child.failures):
                        _say(
                            f"{child.name} exited ({code}) {child.failures} times in a row "
                            "right after starting; giving up (see its output above)"
                        )
                        self.shutdown()
                        return 1
                    _say(f"{child.name} exited ({code}); restarting in {delay:.1f}s")
                elif child.restart_at is not None and time.monotonic() >= child.restart_at:
                    child.start()
                    _say(f"{child.name} restarted (pid {child.pid})")
        return self.shutdown()

    def _mark_dead(self, pid: int | None) -> None:
        if pid is None:
            return
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(self.config.metrics_dir))
        except Exception:  # metrics hygiene must never stop the restart
            pass

    def shutdown(self) -> int:
        """Stop gunicorn (workers drain), then the supervisor (plugins shut down); exit 0."""
        _say("stopping")
        # A second Ctrl-C during the drain means "now": the handlers stay installed and
        # Child.stop's waits are bounded anyway.
        self.web.stop(35.0)
        self.supervisor.stop(self.config.shutdown_grace * 2 + 10)
        _say("stopped")
        return 0


def main(args: Any) -> int:
    """Entry point of ``toru serve`` (see toru/cli.py)."""
    overrides = {"bind": getattr(args, "bind", None), "workers": getattr(args, "workers", None)}
    try:
        config = load_config(getattr(args, "home", None), overrides)
    except ConfigError as exc:
        print(f"toru serve: {exc}", file=sys.stderr)
        return 2
    return ServeParent(config, enable_all=bool(getattr(args, "enable_all", False))).run()
