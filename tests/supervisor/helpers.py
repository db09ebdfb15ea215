"""Helpers for the supervisor tests: test-plugin binaries, a supervisor subprocess, polling."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from toru.store import Store
from toru.supervisor.cgroups import PluginCgroups, home_cgroup
from toru.supervisor.client import ControlClient

from .. import timing

# TORU_TEST_SOURCE_ROOT runs another tree's ``toru`` under these tests (checking that a
# test fails without its fix, or an A/B comparison).
ROOT = Path(os.environ.get("TORU_TEST_SOURCE_ROOT") or Path(__file__).resolve().parents[2])
MISBEHAVE = Path(__file__).resolve().parent / "plugins" / "misbehave.py"

# Small numbers so the whole directory stays fast; every test can override.
FAST_ENV = {
    "TORU_RESTART_BACKOFF": "0.1,0.2",
    "TORU_MAX_FAILURES": "10",
    "TORU_HEALTH_INTERVAL": "1",
    "TORU_RESCAN_INTERVAL": "0.3",
    "TORU_SUPERVISOR_QUIET": "1",
    # generous, scaled timeouts (tests/timing.py): a loaded CI box must not fake a hang
    **timing.product_env(SHUTDOWN_GRACE=timing.scaled(1)),
}


def make_plugin(
    plugins_dir: Path, plugin_id: str, mode: str = "good", name: str | None = None
) -> Path:
    """Write ``<name or id>.binary`` running misbehave.py in ``mode`` as plugin ``plugin_id``."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    path = plugins_dir / f"{name or plugin_id}.binary"
    path.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -I "{MISBEHAVE}" {mode} {plugin_id} "$@"\n'
    )
    path.chmod(0o755)
    return path


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``pred`` until truthy; the value, or AssertionError after ``timeout`` (scaled)."""
    timeout = timing.scaled(timeout)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


@contextlib.contextmanager
def metadata_timing_out(home: Path, plugin_id: str) -> Iterator[tuple[SupervisorProc, dict]]:
    """A supervisor whose ``--metadata`` probe of ``plugin_id`` (a plugin that never
    answers it: it sleeps an hour) has timed out; yields it and the plugin's info then.

    The product timeout is long enough for a Python start to print or answer on a loaded
    machine (a CI run with 0.5 s saw nothing printed yet), far shorter than the sleep; the
    long backoff keeps the retry out of the test's way.
    """
    env = {
        "TORU_METADATA_TIMEOUT": str(timing.scaled(5)),
        "TORU_RESTART_BACKOFF": str(timing.scaled(120)),
    }
    sup = SupervisorProc(home, env=env).start(settle=False)
    try:
        yield sup, wait_for(lambda: (i := sup.info(plugin_id))["error"] and i, timeout=60)
    finally:
        sup.stop()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def enable_on_disk(home: Path, *ids: str) -> None:
    state = home / "plugins" / ".metadata" / "config.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(state.read_text()) if state.exists() else {"version": 1, "plugins": {}}
    for i in ids:
        data["plugins"][i] = {"enabled": True}
    state.write_text(json.dumps(data))


class SupervisorProc:
    """``toru supervisor --home H`` in its own process group, with a client."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, root: Path = ROOT) -> None:
        self.home = home
        self.root = root  # the source tree whose ``toru`` runs (an A/B benchmark passes another)
        self.env = {**os.environ, **FAST_ENV, **(env or {})}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket = home / "run" / "supervisor.sock"
        self._client: ControlClient | None = None

    def start(self, timeout: float = 20.0, settle: bool = True) -> SupervisorProc:
        """Start; wait for the control socket and, with ``settle``, until discovery is done
        and no plugin is still ``starting`` (the socket opens before discovery)."""
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toru.cli", "supervisor", "--home", str(self.home)],
            env=self.env,
            cwd=self.root,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=open(self.home / "supervisor.stderr", "ab"),  # noqa: SIM115
        )
        try:
            wait_for(self._ready, timeout)
            if settle:
                wait_for(self.settled, timeout)
        except BaseException:  # a supervisor that never got ready must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise
        return self

    def settled(self) -> bool:
        """The first discovery is done and no plugin is ``discovering`` or ``starting``.

        NOTE: ``list`` alone is vacuously settled while it is still empty, right after the
        control socket opens and before discovery registered anything (test_pins flaked so).
        """
        if not self.call("hello").get("discovery_done"):
            return False
        return all(p["state"] not in ("discovering", "starting") for p in self.call("list"))

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"supervisor exited {self.proc.returncode}: "
                + (self.home / "supervisor.stderr").read_text()[-2000:]
            )
        if not self.socket.exists():
            return False
        try:
            return bool(self.client.call("ping", timeout=timing.scaled(2)))
        except Exception:
            return False

    @property
    def client(self) -> ControlClient:
        if self._client is None:
            # Above every product timeout a test leaves at its (scaled) default.
            self._client = ControlClient(
                self.socket, timeout=timing.WAIT, http_timeout=timing.HTTP + timing.WAIT
            )
        return self._client

    def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        return self.client.call(op, args, timing.WAIT if timeout is None else timeout)

    def info(self, plugin: str) -> dict[str, Any]:
        return self.call("get", {"plugin": plugin})

    def wait_state(self, plugin: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        return wait_for(lambda: (i := self.info(plugin))["state"] == state and i, timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait; SIGKILL the group if it hangs. Idempotent."""
        if self._client is not None:
            self._client.close()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> SupervisorProc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        kill_leftovers(self.home)


def kill_leftovers(home: Path) -> None:
    """Safety net: SIGKILL any process still running a test plugin of this home, and remove
    the home's cgroups (a supervisor killed with SIGKILL cannot)."""
    parent = home_cgroup(home)
    if parent is not None and parent.exists():
        PluginCgroups(parent, frozenset(), {}, log=None).close()
    marker = str(home)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in env and b"TORU_PLUGIN_ID=" in env:
            try:
                os.kill(int(d.name), signal.SIGKILL)
            except OSError:
                pass


def scrape_metrics(home: Path) -> str:
    """The Prometheus exposition of a home's multiprocess directory (what /metrics serves)."""
    code = (
        "from prometheus_client import CollectorRegistry, generate_latest, multiprocess\n"
        "r = CollectorRegistry(); multiprocess.MultiProcessCollector(r)\n"
        "print(generate_latest(r).decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(home / "var" / "metrics")}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def metric_value(text: str, sample: str) -> float:
    """The value of one exposition line starting with ``sample`` (0.0 when absent)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def damage_database(db: Path) -> None:
    """A real database with its plugin_kv pages overwritten: opens, fails quick_check."""
    store = Store(db)
    store.migrate()
    store.instance_id()
    for i in range(3000):
        store.kv_set("filler", f"k{i}", "v" * 100)
    store.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 60 * page
    data[40 * page : 44 * page] = b"\xab" * (4 * page)
    db.write_bytes(bytes(data))
