"""One plugin under supervision: its state machine and lifecycle task.

Everything that changes a plugin's state goes through ``_set_state``, which checks
``states.TRANSITIONS``, updates the metrics, announces the route change and writes the
event. The lifecycle is one task per enabled plugin: start -> run until exit/hang/connection
loss -> backoff -> start again, until it is disabled (``stopping`` -> ``stopped``) or gives
up (``failed``, persisted as disabled). ``admission`` is the one answer to "may this plugin
take a request now", for the http op, the direct route table and the health check.
"""

from __future__ import annotations

import asyncio
import collections
import math
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from toru.errors import NotFound, ToruError, Unavailable
from toru.session_cookie import REFUSED_COOKIE
from toru_plugin_api.messages import PluginMetadata, now_iso

from . import metrics
from .connection import CLEAN_EOF, PluginConnection
from .discovery import Discovered
from .instance import Candidate, UpgradeFailed, probe_request, release, stop_instance, until_healthy
from .launcher import LaunchAborted, Launched, Launcher, LaunchError, LaunchSpec
from .logs import LogWriter, StderrLevels, SupervisorLog, plugin_line_entry
from .pins import BinaryChange
from .process import PluginProcess, describe_exit, exit_reason
from .restart_policy import RestartPolicy
from .states import ACTIVE, TRANSITIONS, PluginState, check_transition
from .stats import PluginStats

S = PluginState
STDERR_TAIL = 20
EXIT_AFTER_LOSS = 2.0  # seconds a plugin whose connection broke has to show its own exit
EVENT_EVERY = 10.0  # seconds: at most one `timeout` (or `bad_reply`) event per plugin per window
WARN_EVENTS = frozenset(
    {"crashed", "timeout", "unhealthy", "disabled", "bad_reply", "binary_changed", "upgrade_failed"}
)
# States a detected binary change turns into ``changed`` at once (nothing of it runs).
IDLE_STATES = frozenset({S.STOPPED, S.FAILED, S.INVALID, S.BACKOFF})


async def _unpinned(plugin_id: str, binary: Path) -> BinaryChange | None:
    return None


@dataclass
class Deps:
    """What a plugin's lifecycle needs from the outside; OS seams are replaceable in tests."""

    launcher: Launcher
    store: Any  # toru.store.Store (or a fake with add_event)
    log: SupervisorLog
    policy: RestartPolicy
    log_dir: Path
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    shutdown_grace: float = 5.0
    health_timeout: float = 3.0
    http_timeout: float = 30.0  # how long an upgrade's old instance may finish its requests
    persist_enabled: Callable[[str, bool, str | None], None] = lambda pid, on, why: None
    # The consecutive-failure count survives supervisor restarts (supervisor_state.py).
    persist_failures: Callable[[str, int], None] = lambda pid, n: None
    spawn_task: Callable[[Awaitable[Any]], asyncio.Task[Any]] = field(
        default=lambda coro: asyncio.ensure_future(coro)  # type: ignore[arg-type,return-value]
    )
    clock: Callable[[], float] = time.monotonic
    # Right before every spawn: None when the binary may run, else how it differs from its
    # pin (supervisor/pins.py); the plugin then goes to ``changed`` instead of starting.
    verify_binary: Callable[[str, Path], Awaitable[BinaryChange | None]] = _unpinned


class SupervisedPlugin:
    """A discovered plugin and, when enabled, its running process."""

    def __init__(
        self, found: Discovered, deps: Deps, plugin_id: str | None = None, failures: int = 0
    ) -> None:
        self.deps = deps
        self.binary = found.binary
        self.signature = found.signature
        self.metadata: PluginMetadata | None = found.metadata
        self.id = plugin_id or found.id
        self.error: str | None = found.error
        self.state = S.INVALID if found.metadata is None else S.STOPPED
        self.enabled = False
        self.failures = failures
        self.restarts = 0
        self.started_at: float | None = None
        self.retry_at: float | None = None
        self.health = "unknown"
        self.launched: Launched | None = None
        self.binary_change: BinaryChange | None = None  # the file on disk is not the pinned one
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._stderr_levels = StderrLevels()  # crash output on stderr is logged as error
        self.stats = PluginStats()
        self.log_path = deps.log_dir / f"{self.id}.log"
        self.spec = LaunchSpec(
            self.id,
            self.binary,
            self.log_path,
            binary_bodies=found.metadata is not None and found.metadata.binary_bodies,
        )
        self._log: LogWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[str] | None = None
        self._probe_pending = False
        self._probe_rid = ""
        self._last_limited_event: dict[str, float] = {}  # event -> when last recorded
        self._stop_reason = "disabled"
        self._last_reconnect = -math.inf
        self._retiring: set[asyncio.Task[None]] = set()  # upgrades' old instances stopping
        # A failed upgrade: the binary's signature and why, while the old process serves on.
        self.upgrade_error: str | None = None
        self.rejected_signature: tuple[int, int] | None = None
        self._rejected_by: int | None = None  # the pid that served on after that failure
        metrics.set_state(self.id, self.state)

    # ------------------------------------------------------------------ state

    @property
    def route(self) -> str | None:
        return self.metadata.route if self.metadata else None

    @property
    def stopping(self) -> bool:
        return self.state is S.STOPPING

    def launch_aborted(self) -> bool:
        """``LaunchCallbacks``: a disable arrived while the launcher waits for the socket."""
        return self.state is S.STOPPING

    def _set_failures(self, n: int) -> None:
        if n != self.failures:
            self.failures = n
            self.deps.persist_failures(self.id, n)

    def _set_state(
        self, new: PluginState, event: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        """The only place a state changes: table check, metric, event, log."""
        old = self.state
        if new is not old:
            check_transition(old, new)
            self.state = new
            metrics.set_state(self.id, new)
        if event is not None:
            self.record_event(event, details or {})

    def record_event(self, event: str, details: dict[str, Any]) -> None:
        """Write a ``plugin_events`` row; a storage error is logged, never raised."""
        try:
            self.deps.store.add_event(self.id, event, details)
        except apsw.Error as exc:
            self.deps.log.error("could not record event", self.id, error=str(exc), event=event)
        level = "warn" if event in WARN_EVENTS else "info"
        self.deps.log.log(level, f"plugin {event}", self.id, **{"details": details})
        if event != "timeout":
            self._plugin_log(level, f"supervisor: plugin {event}", details)

    def _plugin_log(self, level: str, message: str, details: dict[str, Any]) -> None:
        w = self._writer()
        w.write(
            {
                "timestamp": now_iso(),
                "level": level,
                "plugin": self.id,
                "message": message,
                "source": "supervisor",
                "details": details,
            }
        )
        w.flush()

    def _writer(self) -> LogWriter:
        if self._log is None:
            self._log = LogWriter(
                self.log_path,
                self.deps.log_max_bytes,
                self.deps.log_backups,
                on_error=metrics.log_write_errors("plugin", self.id),  # faults: issue 11 item 4
            )
        return self._log

    # ------------------------------------------------------------------ callbacks

    def on_output(self, stream: str, lines: list[bytes]) -> None:
        """Captured stdout/stderr lines -> the plugin's JSON-lines log (+ stderr tail)."""
        w = self._writer()
        for raw in lines:
            entry = plugin_line_entry(self.id, raw, stream, self._stderr_levels)
            w.write(entry)
            if stream == "stderr":
                self.stderr_tail.append(str(entry.get("message", ""))[:500])
        w.flush()

    def on_kv_op(self, action: str) -> None:
        metrics.KV_OPERATIONS.labels(self.id, action).inc()

    def on_kv_error(self, reason: str) -> None:
        self.deps.log.warn(reason, self.id)

    def on_connection_lost(self, reason: str) -> None:
        self._wakeup(f"connection lost ({reason})")
        if reason.startswith("protocol error"):
            metrics.PROXY_ERRORS.labels(self.id, "bad_response").inc()
        else:
            metrics.PROXY_ERRORS.labels(self.id, "connection_lost").inc()

    def on_request_timeout(self, request_id: str) -> None:
        if request_id == self._probe_rid:
            return  # a health probe: reported as `unhealthy`, not as a proxy timeout
        metrics.PROXY_ERRORS.labels(self.id, "timeout").inc()
        self._limited_event("timeout", {"request_id": request_id})

    def on_bad_reply(self, reason: str) -> None:
        """A reply ``validate_http_reply`` refused (its client got 502): the reason goes to
        the plugin's log and events, at most once per window like ``timeout``."""
        self._limited_event("bad_reply", {"reason": reason})

    def on_toru_cookie(self) -> None:
        """A reply tried to set Toru's session cookie (the web tier removes that header): a
        warning in the plugin's log, at most once per window."""
        if self._window_open("toru_cookie"):
            self._plugin_log("warn", f"toru: {REFUSED_COOKIE}", {})

    def _limited_event(self, event: str, details: dict[str, Any]) -> None:
        if self._window_open(event):
            self.record_event(event, details)

    def _window_open(self, key: str) -> bool:
        """True at most once per ``EVENT_EVERY`` seconds for ``key`` (and notes it)."""
        now = self.deps.clock()
        if now - self._last_limited_event.get(key, -math.inf) < EVENT_EVERY:
            return False
        self._last_limited_event[key] = now
        return True

    def mark_changed(self, change: BinaryChange) -> None:
        """The binary on disk is not the approved one (event ``binary_changed``, once per
        change). Nothing of it runs: an idle plugin goes to ``changed`` at once; a running old
        version keeps serving (``running`` with ``binary_change`` set: its process still runs
        the approved file's inode) and goes to ``changed`` when it exits, by the check before
        every spawn."""
        if change != self.binary_change:
            self.binary_change = change
            self.record_event("binary_changed", change.to_json())
        if self.state in IDLE_STATES:
            was_backoff = self.state is S.BACKOFF
            self._set_state(S.CHANGED)
            if was_backoff:
                self._wakeup("binary changed")  # the pending restart ends in the pin check

    def _wakeup(self, reason: str) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(reason)

    # ------------------------------------------------------------------ control

    def enable(self) -> bool:
        """Start the lifecycle if it is not running. Idempotent; False if invalid."""
        if self.state is S.INVALID:
            return False
        self.enabled = True
        if self._task is not None and not self._task.done():
            return True
        if self.state is S.FAILED:
            self._set_failures(0)
        self._set_state(S.STARTING)  # at once, so callers never see a stale `stopped`
        self._task = self.deps.spawn_task(self._lifecycle())
        return True

    async def start(self) -> bool:
        """``enable``, first waiting for a stop still in progress (disable, then enable)."""
        task = self._task
        if task is not None and not task.done() and self.stopping:
            await asyncio.shield(task)
        return self.enable()

    async def disable(self, reason: str = "disabled") -> None:
        """Stop the lifecycle: shutdown, SIGTERM, SIGKILL after the grace. Idempotent."""
        self.enabled = False
        self._stop_reason = reason
        if self.state in ACTIVE:
            self._set_state(S.STOPPING)
        self._wakeup("disabled")
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)
        if self.state is S.FAILED:
            self._set_state(S.STOPPED)

    def restart_now(self) -> None:
        """In backoff: start again now instead of when the timer ends (a restart)."""
        if self.state is S.BACKOFF:
            self._wakeup("restart requested")

    async def wait_started(self, timeout: float) -> None:
        """Wait until the plugin is past ``starting`` (running, backoff, ...) or ``timeout``."""
        deadline = self.deps.clock() + timeout
        while self.state is S.STARTING and self.deps.clock() < deadline:
            await asyncio.sleep(0.01)

    def admission(self) -> PluginConnection:
        """May this plugin take a request now? Its connection, or raise the reason why not.

        The one answer for the http op, the direct route table and the health check:
        503 with ``retry_after`` while it is starting, in backoff or reconnecting, 404 once
        it is being disabled or is not enabled.
        """
        state = self.state
        launched = self.launched
        if state is S.RUNNING and launched is not None:
            connection = launched.connection
            if not connection.closed:
                return connection  # type: ignore[no-any-return]
            # died or reconnecting; the state catches up in a moment
            raise Unavailable(
                f"plugin {self.id} has no connection (restarting or reconnecting), try again shortly",
                retry_after=1,
            )
        if state in ACTIVE:
            raise Unavailable(
                f"plugin {self.id} is {state.value}, try again shortly",
                retry_after=self.retry_after(),
            )
        if state is S.STOPPING:
            raise NotFound(f"plugin {self.id} is being disabled")
        if state is S.CHANGED:
            raise NotFound(f"plugin {self.id}'s binary changed and waits for an admin's approval")
        raise NotFound(f"plugin {self.id} is not enabled")

    def retry_after(self) -> int:
        """Seconds a client should wait (503 ``Retry-After``) while starting or in backoff."""
        if self.state is S.BACKOFF and self.retry_at is not None:
            return max(1, math.ceil(self.retry_at - self.deps.clock()))
        return 1

    # ------------------------------------------------------------------ lifecycle

    async def _lifecycle(self) -> None:
        try:
            await self._supervise()
        except asyncio.CancelledError:
            await self._stop_process("cancelled")
            self._finish_stop("supervisor shutdown")
            raise
        except Exception as exc:  # a bug: never let it kill the supervisor silently
            self.deps.log.error("lifecycle failed", self.id, error=repr(exc))
            await self._stop_process("internal error")
            self.error = f"internal error: {exc!r}"
            self._finish_stop(self.error)

    def _finish_stop(self, reason: str) -> None:
        """-> ``stopping`` (if not yet) -> ``stopped`` with the ``stopped`` event."""
        if S.STOPPING in TRANSITIONS[self.state]:
            self._set_state(S.STOPPING)
        if self.state is S.STOPPING:
            self._set_state(S.STOPPED, "stopped", {"reason": reason})
        self.retry_at = None

    async def _supervise(self) -> None:
        first = True
        while not self.stopping:
            self._set_state(S.STARTING)
            self.retry_at = None
            change = await self.deps.verify_binary(self.id, self.binary)
            if self.stopping:  # disabled while the hash was read
                break
            if change is not None:
                self.mark_changed(change)
                self._set_state(S.CHANGED)
                return  # waits for an admin's approval (supervisor.approve)
            self.stderr_tail.clear()
            self._wake = asyncio.get_running_loop().create_future()
            t0 = self.deps.clock()
            try:
                self.launched = await self.deps.launcher.launch(self.spec, self)
            except LaunchAborted:
                break
            except LaunchError as exc:
                if self.stopping:
                    break
                outcome: dict[str, Any] = {"reason": str(exc), **exc.details}
                uptime = self.deps.clock() - t0
            else:
                if self.stopping:  # disabled just as the launch completed
                    await self._stop_process(self._stop_reason)
                    break
                self.started_at = self.deps.clock()
                self.health = "healthy"
                self.error = None
                details = {"pid": self.launched.process.pid}
                if first:
                    self._set_state(S.RUNNING, "started", details)
                else:
                    self.restarts += 1
                    metrics.PLUGIN_RESTARTS.labels(self.id).inc()
                    self.stats.record_restart()
                    self._set_state(S.RUNNING, "restarted", {**details, "restarts": self.restarts})
                maybe = await self._run()
                uptime = self.deps.clock() - self.started_at
                if maybe is None:
                    break  # disabled
                outcome = maybe
            first = False
            if self.stopping:  # disabled while the crash was being handled
                break
            self.health = "unknown"
            self.started_at = None
            self._set_failures(self.deps.policy.failures_after_crash(self.failures, uptime))
            metrics.PLUGIN_CRASHES.labels(self.id).inc()
            self.error = str(outcome.get("reason", "crashed"))
            crash = {
                **outcome,
                "uptime_seconds": round(uptime, 3),
                "consecutive_failures": self.failures,
                "stderr_tail": list(self.stderr_tail),
            }
            if self.deps.policy.gives_up(self.failures):
                self.enabled = False
                self.record_event("crashed", crash)
                reason = f"disabled after {self.failures} consecutive failures"
                self.error = f"{reason}; last: {self.error}"
                self._set_state(S.FAILED, "disabled", {"reason": reason})
                self.deps.persist_enabled(self.id, False, reason)
                return
            delay = self.deps.policy.delay(self.failures)
            self.retry_at = self.deps.clock() + delay
            crash["restart_in_seconds"] = delay
            self._set_state(S.BACKOFF, "crashed", crash)
            # NOTE: a fresh future, because the crash itself (connection lost) may already
            # have resolved the old one, which would skip the backoff entirely.
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._wake), delay)
            except TimeoutError:
                pass
        self._finish_stop(self._stop_reason)

    async def _run(self) -> dict[str, Any] | None:
        """Wait for exit, connection loss, a failed probe or a stop; the crash details or None.

        An upgrade swaps ``self.launched`` underneath (``_switch``): the loop then watches
        the new instance, and the old one is ``_retire``'s.
        """
        while True:
            launched = self.launched
            assert launched is not None and self._wake is not None
            proc = launched.process
            await asyncio.wait({proc.exited, self._wake}, return_when=asyncio.FIRST_COMPLETED)
            if self.stopping:
                await self._stop_process(self._stop_reason)
                return None
            if self.launched is not launched:
                continue  # upgraded: the new instance is the one to watch
            if not proc.exited.done():
                reason = self._wake.result()
                if await self._outlives_loss(proc, reason):
                    if await self._reconnect(launched, reason):
                        continue
                    break
            why = exit_reason(proc)  # "memory limit" after an OOM kill in its cgroup
            launched.connection.close("plugin exited")
            await self._reap()
            return {"reason": why, **describe_exit(proc.exited.result())}
        proc.signal_group(9)
        code = await asyncio.shield(proc.exited)
        await self._reap()
        return {"reason": reason, **describe_exit(code)}

    async def _outlives_loss(self, proc: PluginProcess, reason: str) -> bool:
        """False when a broken connection turns out to be the plugin's exit.

        The socket often reports a dead plugin before its pidfd does (kill -9 on a busy
        machine): a reset gets ``EXIT_AFTER_LOSS`` to show the exit, so the crash names the
        signal or exit code rather than "connection reset by peer". A clean EOF, a protocol
        error (ours to punish) and a failed probe are not waited for.
        """
        if not reason.startswith("connection lost (") or "protocol error" in reason:
            return True
        if reason != f"connection lost ({CLEAN_EOF})":
            try:
                await asyncio.wait_for(asyncio.shield(proc.exited), EXIT_AFTER_LOSS)
            except TimeoutError:
                pass
        return not proc.exited.done()

    async def _reconnect(self, launched: Launched, reason: str) -> bool:
        """A plugin that closed its connection but still runs gets a new one.

        Original plugins serve one connection at a time; one that closes after a while is
        not dead. When the next request was already on its way, that close resets the
        connection (bytes unread) instead of a clean EOF; a plugin still running after it
        (``_outlives_loss``) is not dead either. At most one reconnect per second, else it
        counts as a crash.
        """
        reconnect = getattr(self.deps.launcher, "reconnect", None)
        if reconnect is None or not reason.startswith("connection lost ("):
            return False
        if "protocol error" in reason:
            return False  # the connection is ours to close and the plugin ours to restart
        now = self.deps.clock()
        if now - self._last_reconnect < 1.0 or self.stopping:
            return False
        self._last_reconnect = now
        self._wake = asyncio.get_running_loop().create_future()
        try:
            launched.connection = await reconnect(self.spec, self, launched)
        except (LaunchError, LaunchAborted, OSError) as exc:
            self.deps.log.warn("could not reconnect to the plugin", self.id, error=str(exc))
            return False
        self.deps.log.info("plugin closed its connection; reconnected", self.id)
        return True

    async def _reap(self) -> None:
        launched, self.launched = self.launched, None
        if launched is not None:
            await release(launched)

    async def _stop_process(self, why: str) -> None:
        """Stop the serving instance (``_stop_instance``) and forget it."""
        if self.launched is not None:
            await stop_instance(self.launched, why, self.deps.shutdown_grace)
            await self._reap()

    # ------------------------------------------------------------------ upgrade

    async def upgrade(self, found: Discovered) -> dict[str, Any]:
        """Run ``found`` beside the serving process and switch to it once it is healthy.

        The new instance has its own socket, KV channel and cgroup (``LaunchSpec.instance``);
        it is healthy when it answers a probe sent after ``init`` on its connection within
        ``health_timeout``. Then new requests go to it (``admission``) and
        the old instance finishes what it was given before it is stopped (``_retire``, a
        task). Returns the ``upgraded`` details; raises ``UpgradeFailed`` with the old
        process still serving and the new one stopped (also when cancelled).
        """
        old = self.launched
        if self.state is not S.RUNNING or old is None:
            raise UpgradeFailed(f"the plugin is {self.state.value}, not running")
        change = await self.deps.verify_binary(self.id, found.binary)  # the pin, as before a spawn
        if change is not None:
            self.mark_changed(change)  # the old process serves on; approve runs the new file
            raise UpgradeFailed(
                f"{change.binary} is not the approved binary (sha256 {change.found[:12]}…):"
                f" approve it first (toru plugins approve {self.id})"
            )
        spec = LaunchSpec(
            self.id,
            found.binary,
            self.log_path,
            binary_bodies=found.metadata is not None and found.metadata.binary_bodies,
            instance=self.spec.instance + 1,
        )
        candidate = Candidate(self)
        try:
            new = await self.deps.launcher.launch(spec, candidate)
        except LaunchAborted:
            raise UpgradeFailed("the plugin was disabled while the new version started") from None
        except LaunchError as exc:
            raise UpgradeFailed(f"the new version failed to start: {exc}", exc.details) from None
        try:
            await until_healthy(new, candidate.lost, self.deps.health_timeout)
            if self.state is not S.RUNNING or self.launched is not old:
                raise UpgradeFailed(f"the old process stopped meanwhile ({self.state.value})")
        except BaseException:
            await stop_instance(new, "upgrade failed", self.deps.shutdown_grace)
            await release(new)
            raise
        self._switch(old, new, spec, found, candidate)
        return {
            "old_pid": old.process.pid,
            "new_pid": new.process.pid,
            "version": found.metadata.version if found.metadata else "",
        }

    def _switch(
        self,
        old: Launched,
        new: Launched,
        spec: LaunchSpec,
        found: Discovered,
        candidate: Candidate,
    ) -> None:
        """The instant of an upgrade: the new instance serves, the old one retires."""
        old.connection.on_lost = None  # its end is no longer the plugin's concern
        candidate.promoted = True
        self.launched, self.spec = new, spec
        self.binary, self.signature, self.metadata = found.binary, found.signature, found.metadata
        self.started_at = self.deps.clock()
        self.health = "healthy"
        self.error = self.upgrade_error = self.rejected_signature = None
        self._set_failures(0)  # a new binary starts with a clean count
        wake, self._wake = self._wake, asyncio.get_running_loop().create_future()
        if wake is not None and not wake.done():
            wake.set_result("upgraded")  # _run: watch the new instance
        task = self.deps.spawn_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Launched) -> None:
        """An upgrade's old instance: it finishes the requests pending on it (for at most
        ``http_timeout``, the longest any of them may take; less if the plugin is being
        disabled), then the usual stop."""
        deadline = self.deps.clock() + self.deps.http_timeout
        pending = old.connection.pending
        while (
            len(pending)
            and not old.process.exited.done()
            and self.enabled  # a disable (or the supervisor's stop) cuts the wait short
            and self.deps.clock() < deadline
        ):
            await asyncio.sleep(0.02)
        await stop_instance(old, "replaced by a new version", self.deps.shutdown_grace)
        await release(old)
        if old.socket is not None:
            shutil.rmtree(old.socket.parent, ignore_errors=True)  # its own run/p/<id>.<n>/

    def keeps_serving(self, signature: tuple[int, int]) -> bool:
        """True while the process that was serving when ``signature`` failed to take over
        still serves. Once it is gone (a crash, a disable), whatever runs now was started
        from the file on disk, so the next rescan looks at that file again."""
        launched = self.launched
        return (
            signature == self.rejected_signature
            and self.state is S.RUNNING
            and launched is not None
            and launched.process.pid == self._rejected_by
        )

    def upgrade_failed(self, signature: tuple[int, int], reason: str) -> None:
        """Remember a binary that failed to take over, so a rescan does not retry it while
        the old process serves (a new binary, or a restart, tries again)."""
        self.upgrade_error = reason
        self.rejected_signature = signature
        self._rejected_by = self.launched.process.pid if self.launched is not None else None

    # ------------------------------------------------------------------ health

    def check_health(self, now: float) -> None:
        """The periodic health rule (docs/ARCHITECTURE.md, "Health"); ``now`` is monotonic.

        Busy is not hung: while requests are in flight the plugin is judged by progress
        (answers arriving, or requests still inside their deadlines), never by a probe that
        a one-connection plugin would queue behind its work. It is hung only when it has
        answered nothing for ``health_timeout`` after its oldest owed request's deadline,
        or, when idle, when the probe goes unanswered for ``health_timeout``.
        """
        try:
            connection = self.admission()
        except ToruError:
            return
        if self.started_at is not None and now - self.started_at >= self.deps.policy.reset_after:
            self._set_failures(0)
        timeout = self.deps.health_timeout
        stalled = connection.stalled_for(self._probe_rid if self._probe_pending else "")
        if stalled is None:
            self._probe(connection, judge=True)  # idle: the probe decides
        elif stalled >= timeout:
            why = f"no answer for {stalled:.1f} s after a request's deadline passed"
            self._hung(f"{why} (TORU_HEALTH_TIMEOUT / supervisor.health_timeout {timeout:g} s)")
        elif stalled > 0:
            self._probe(connection, judge=False)  # past a deadline: ask for a sign of life

    def _probe(self, connection: PluginConnection, judge: bool) -> None:
        """Send ``GET /health`` (``X-Toru-Probe: 1``); any reply is healthy.

        ``judge``: the plugin was idle, so an unanswered probe means hung. Otherwise the
        probe only gives a busy plugin a chance to show progress.
        """
        if self._probe_pending:
            return
        self._probe_pending = True
        timeout = self.deps.health_timeout
        launched = self.launched

        def done(reply: dict[str, Any] | None, err: ToruError | None) -> None:
            self._probe_pending = False
            if err is None:
                self.health = "healthy"
                connection.forget_owed()
            elif judge and err.status == 504 and self.launched is launched:
                self._hung(
                    f"health probe unanswered after {timeout:g} s"
                    " (TORU_HEALTH_TIMEOUT / supervisor.health_timeout)"
                )

        self._probe_rid = connection.request("http", probe_request(), timeout, done)

    def _hung(self, reason: str) -> None:
        if self.health == "unhealthy":
            return  # already being killed; one event per hang
        self.health = "unhealthy"
        self.record_event("unhealthy", {"reason": reason})
        self._wakeup(f"unhealthy: {reason}")

    # ------------------------------------------------------------------ views

    def uptime(self) -> float | None:
        return None if self.started_at is None else self.deps.clock() - self.started_at

    def info(self) -> dict[str, Any]:
        """``PluginInfo`` of docs/control-protocol.md."""
        m = self.metadata
        launched = self.launched
        up = self.uptime() if self.state is S.RUNNING else None
        return {
            "id": self.id,
            "name": m.name if m else self.binary.name,
            "version": m.version if m else "",
            "author": m.author if m else None,
            "icon": m.icon if m else "",
            "route": m.route if m else None,
            "binary": self.binary.name,
            "enabled": self.enabled,
            "state": self.state.value,
            "health": self.health if self.state is S.RUNNING else "unknown",
            "pid": launched.process.pid if launched is not None else None,
            "restarts": self.restarts,
            "consecutive_failures": self.failures,
            "uptime_seconds": round(up, 3) if up is not None else None,
            "error": self.error,
            "upgrade_error": self.upgrade_error,
            "retry_at": wall_time(self.retry_at, self.deps.clock) if self.retry_at else None,
            "binary_change": self.binary_change.to_json() if self.binary_change else None,
        }

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def wall_time(mono: float, clock: Callable[[], float]) -> float:
    """A monotonic deadline as a Unix timestamp (for the UI)."""
    return round(time.time() + (mono - clock()), 3)
