"""The supervisor's core: the plugin registry and every operation the control server offers.

It owns all plugin state. Plugins are keyed by id (routes index the valid ones); each
enabled plugin has one lifecycle task in the supervisor's TaskGroup; one periodic task does
the cheap directory check, health probes and the daily event pruning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import apsw

from toru.config import Config
from toru.errors import BadGateway, BadRequest, Conflict, NotFound, ToruError, Unavailable
from toru.store import Store
from toru_plugin_api.codec import ProtocolError
from toru_plugin_api.messages import BadReply, parse_kv_op, validate_http_reply

from . import metrics
from .cgroups import PluginCgroups, without_cgroups
from .discovery import (
    Discovered,
    directory_signature,
    inspect_all,
    list_binaries,
    resolve_conflicts,
)
from .kv_channel import execute_kv
from .launcher import Launcher, ProcessLauncher
from .logs import LEVELS, SupervisorLog, normalize_level, read_logs
from .plugin_state_file import PluginStateFile
from .restart_policy import RestartPolicy
from .route_generation import RouteGeneration
from .states import PluginState
from .supervised import Deps, SupervisedPlugin

S = PluginState
HttpAnswer = Callable[[Any, dict[str, Any], bytes], None]  # (rid, reply payload, raw message)
HttpFail = Callable[[Any, ToruError], None]
PRUNE_EVERY = 24 * 3600.0
REPORT_MAX_SAMPLES = 100_000  # per plugin and report: a worker's second at any real rate


class Supervisor:
    """Registry of plugins and the operations on them (transport-agnostic)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        log: SupervisorLog,
        instance_id: str,
        launcher: Launcher | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.log = log
        self.instance_id = instance_id
        self.metadata_timeout = config.metadata_timeout
        self.socket_wait = config.start_timeout
        self.started_at = time.time()
        self.plugins: dict[str, SupervisedPlugin] = {}
        self.routes: dict[str, SupervisedPlugin] = {}
        self.policy = RestartPolicy(config.restart_backoff, config.max_failures)
        # faults: one cgroup per plugin where the machine allows it (None: process groups)
        limits = config.limits_by_plugin()
        self.cgroups, self.cgroups_reason = (
            PluginCgroups.open(config.home, limits, log, config.cgroups)
            if launcher is None
            else (None, "test")
        )
        self.launcher = launcher or ProcessLauncher(
            store,
            instance_id,
            config.plugin_socket_dir,
            config.home,
            config.max_frame,
            self.socket_wait,
            cgroups=self.cgroups,
        )
        self._tg: asyncio.TaskGroup | None = None
        self._rescan_lock = asyncio.Lock()
        self._dir_sig: Any = None
        self.closing = False
        self.http_timeout = config.http_timeout
        self.generation = RouteGeneration(config.route_generation_file)
        self.state_file = PluginStateFile(config.state_file, log)  # faults: damaged config.json

    # ------------------------------------------------------------------ running

    def _deps(self) -> Deps:
        tg = self._tg
        assert tg is not None, "Supervisor.run() owns the plugin tasks"
        return Deps(
            launcher=self.launcher,
            store=self.store,
            log=self.log,
            policy=self.policy,
            log_dir=self.config.plugin_log_dir,
            log_max_bytes=self.config.log_max_bytes,
            log_backups=self.config.log_backups,
            shutdown_grace=self.config.shutdown_grace,
            health_timeout=self.config.health_timeout,
            persist_enabled=self._persist,
            spawn_task=tg.create_task,
            routes_changed=self.generation.bump,
        )

    async def run(
        self, stop: asyncio.Event, ready: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        """Discover, start the enabled plugins, supervise until ``stop``, then stop them all.

        ``ready`` is awaited once the enabled plugins are past ``starting`` (bounded by the
        socket wait), so clients that connect right after it see running plugins.
        """
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._prune()
            await self.rescan()
            await asyncio.gather(
                *(p.wait_started(self.socket_wait + 1.0) for p in self.plugins.values())
            )
            periodic = tg.create_task(self._periodic())
            if ready is not None:
                await ready()
            await stop.wait()
            self.closing = True  # no enable/rescan may start a plugin from here on
            periodic.cancel()
            await self.shutdown_all()
        self._tg = None

    async def shutdown_all(self) -> None:
        """Stop every plugin concurrently (shutdown, SIGTERM, SIGKILL after the grace)."""
        plugins = list(self.plugins.values())
        await asyncio.gather(
            *(p.disable("supervisor shutdown") for p in plugins), return_exceptions=True
        )
        for p in plugins:
            p.close_log()
            (self.config.plugin_socket_dir / f"{p.id}.sock").unlink(missing_ok=True)
        if self.cgroups is not None:
            self.cgroups.close()

    async def _periodic(self) -> None:
        cfg = self.config
        tick = min(cfg.health_interval, cfg.rescan_interval, 1.0)
        loop = asyncio.get_running_loop()
        next_health = loop.time() + cfg.health_interval
        next_rescan = loop.time() + cfg.rescan_interval
        next_prune = loop.time() + PRUNE_EVERY
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            try:
                if now >= next_health:
                    next_health = now + cfg.health_interval
                    mono = time.monotonic()
                    for p in list(self.plugins.values()):
                        p.probe(mono)
                if now >= next_rescan:
                    next_rescan = now + cfg.rescan_interval
                    if directory_signature(cfg.plugins_dir) != self._dir_sig:
                        await self.rescan()
                if now >= next_prune:
                    next_prune = now + PRUNE_EVERY
                    self._prune()
            except Exception as exc:  # a bug here must not end supervision of every plugin
                self.log.error("periodic check failed", error=repr(exc))

    def _prune(self) -> None:
        try:
            n = self.store.prune_events()
        except apsw.Error as exc:
            self.log.error("could not prune old events", error=str(exc))
            return
        if n:
            self.log.info(f"pruned {n} events older than 7 days")

    def _persist(self, plugin_id: str, enabled: bool, reason: str | None = None) -> None:
        extra = {"disabled_reason": reason} if reason else {"disabled_reason": None}
        try:
            self.state_file.set_enabled(plugin_id, enabled, **extra)
        except OSError as exc:
            self.log.error("could not save plugin state", plugin_id, error=str(exc))

    # ------------------------------------------------------------------ discovery

    async def rescan(self) -> dict[str, Any]:
        """Sync the registry with ``plugins/*.binary``: new, changed and removed binaries."""
        async with self._rescan_lock:
            if self.closing:
                raise Unavailable("the supervisor is shutting down")
            return await self._rescan()

    async def _rescan(self) -> dict[str, Any]:
        cfg = self.config
        self._dir_sig = directory_signature(cfg.plugins_dir)
        binaries = list_binaries(cfg.plugins_dir)
        by_binary = {p.binary: p for p in self.plugins.values()}
        gone = [p for b, p in by_binary.items() if binaries.get(b) != p.signature]
        removed_ids = [p.id for p in gone if p.binary not in binaries]
        for p in gone:
            await p.disable("binary removed or replaced")
            p.close_log()
            self._unregister(p)
        fresh = {
            b: sig for b, sig in binaries.items() if b not in by_binary or by_binary[b] in gone
        }
        found = await inspect_all(fresh, self.metadata_timeout) if fresh else []
        claimed_ids = {p.id: p.binary for p in self.plugins.values() if p.metadata}
        claimed_routes = {p.route: p.binary for p in self.plugins.values() if p.route}
        resolve_conflicts(found, claimed_ids, claimed_routes)
        state = self.state_file.load()
        added = []
        replaced = {p.id for p in gone} - set(removed_ids)
        for d in found:
            plugin = self._register(d)
            if plugin.id not in replaced:
                added.append(plugin.id)
            if plugin.state is S.INVALID:
                self.log.error(f"invalid plugin {d.binary.name}", plugin.id, error=plugin.error)
                plugin.record_event("invalid", {"binary": d.binary.name, "reason": plugin.error})
            elif state.get(plugin.id, {}).get("enabled"):
                plugin.enable()
        for pid in removed_ids:
            metrics.clear_plugin(pid)
        if added or removed_ids:
            self.log.info(
                f"rescan: {len(added)} added, {len(removed_ids)} removed, {len(self.plugins)} total"
            )
        return {"added": added, "removed": removed_ids, "total": len(self.plugins)}

    def _register(self, d: Discovered) -> SupervisedPlugin:
        pid = d.id
        existing = self.plugins.get(pid)
        if existing is not None:
            if d.metadata is not None and existing.metadata is None:
                # An invalid binary only borrowed this id from its file name: a valid plugin
                # owns it, the invalid one is listed under its file name instead.
                del self.plugins[pid]
                existing.id = existing.binary.name
                self.plugins[existing.id] = existing
            else:
                pid = d.binary.name
        plugin = SupervisedPlugin(d, self._deps(), pid)
        self.plugins[plugin.id] = plugin
        if plugin.route:
            self.routes[plugin.route] = plugin
        self.generation.bump()
        return plugin

    def _unregister(self, plugin: SupervisedPlugin) -> None:
        self.plugins.pop(plugin.id, None)
        if plugin.route and self.routes.get(plugin.route) is plugin:
            del self.routes[plugin.route]
        self.generation.bump()

    # ------------------------------------------------------------------ operations

    def plugin(self, plugin_id: Any) -> SupervisedPlugin:
        p = self.plugins.get(plugin_id) if isinstance(plugin_id, str) else None
        if p is None:
            raise NotFound(f"unknown plugin {plugin_id!r}")
        return p

    def list(self) -> list[dict[str, Any]]:
        return [p.info() for p in sorted(self.plugins.values(), key=lambda p: p.id)]

    def warnings(self) -> list[dict[str, Any]]:
        """What an operator must look at (control op ``warnings``, ``GET /api/plugins``)."""
        out = self.state_file.warnings()
        if self.store.damage:
            out.append(
                {
                    "code": "store_damaged",
                    "message": f"the database {self.store.path} is damaged: {self.store.damage}",
                    "file": str(self.store.path),
                }
            )
        return out

    def get(self, plugin_id: Any) -> dict[str, Any]:
        p = self.plugin(plugin_id)
        return {**p.info(), "events": self.store.events(p.id, 20), "cgroup": self._cgroup(p.id)}

    def _cgroup(self, plugin_id: str) -> dict[str, Any]:
        """Where the plugin runs and whether its configured limits are enforced."""
        if self.cgroups is not None:
            return self.cgroups.describe(plugin_id)
        limits = self.config.limits_by_plugin().get(plugin_id)
        return without_cgroups(self.cgroups_reason, limits)

    async def enable(self, plugin_id: Any) -> dict[str, Any]:
        """Enable, persist, and return once the plugin left ``starting`` (or soon after)."""
        p = self.plugin(plugin_id)
        if self.closing:
            raise Unavailable("the supervisor is shutting down")
        if p.state is S.INVALID:
            raise Conflict(f"plugin {p.id} is invalid: {p.error}")
        was = p.enabled and p.active
        self._persist(p.id, True)
        await p.start()
        if not was:
            p.record_event("enabled", {})
        await p.wait_started(self.socket_wait + 1.0)
        return p.info()

    async def disable(self, plugin_id: Any) -> dict[str, Any]:
        """Disable, persist, and return once the process is gone."""
        p = self.plugin(plugin_id)
        was = p.enabled or p.active
        self._persist(p.id, False)
        await p.disable()
        if was:
            p.record_event("disabled", {"reason": "disabled by an admin"})
        return p.info()

    def events(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        plugin = args.get("plugin")
        if plugin is not None:
            self.plugin(plugin)
        return self.store.events(plugin, _int_arg(args, "limit", 50, 1, 1000))

    def logs_args(self, args: dict[str, Any]) -> tuple[Path, int, int, str | None]:
        p = self.plugin(args.get("plugin"))
        level = args.get("level")
        if level is not None and (
            not isinstance(level, str) or normalize_level(level, "") not in LEVELS
        ):
            raise BadRequest(f"level must be one of {', '.join(LEVELS)}")
        page = _int_arg(args, "page", 0, 0, 1_000_000)
        size = _int_arg(args, "page_size", 100, 1, 1000)
        return p.log_path, page, size, level

    def read_logs(self, args: dict[str, Any]) -> dict[str, Any]:
        """Blocking file reads: the control server runs this in a thread."""
        path, page, size, level = self.logs_args(args)
        return read_logs(path, self.config.log_backups, page, size, level)

    def kv(self, args: dict[str, Any]) -> dict[str, Any]:
        p = self.plugin(args.get("plugin"))
        if p.metadata is None:
            raise NotFound(f"plugin {p.id} is invalid")
        try:
            op = parse_kv_op(args, allow_list=True)
            result = execute_kv(self.store, p.id, op.action, op.key, op.value, op.prefix)
        except (ProtocolError, ValueError) as exc:
            raise BadRequest(str(exc))
        metrics.KV_OPERATIONS.labels(p.id, op.action).inc()
        return result

    def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.plugin(args.get("plugin")).stats.snapshot()

    def direct_routes(self, args: dict[str, Any]) -> dict[str, Any]:
        """The routes a worker may send straight to the plugin (control op ``routes``).

        Only running plugins that declared ``multi_connection`` and are not being disabled;
        every other route stays on the supervisor path, which decides 404 and 503.
        ``generation`` is the value of ``run/routes.gen`` this table is current for.
        """
        routes = {}
        for route, p in self.routes.items():
            launched = p.launched
            if (
                p.state is S.RUNNING
                and launched is not None
                and not p.stopping
                and p.metadata is not None
                and p.metadata.multi_connection
                and not launched.connection.closed
            ):
                routes[route] = {
                    "plugin": p.id,
                    "socket": str(self.config.plugin_socket_dir / f"{p.id}.sock"),
                    "pid": launched.process.pid,
                }
        return {"generation": self.generation.value, "routes": routes}

    def report(self, args: dict[str, Any]) -> dict[str, Any]:
        """What workers saw on their direct connections (control op ``report``): latencies
        for the UI's stats and timeouts for the event log. Unknown plugins are skipped (one
        may have been removed since the worker measured)."""
        plugins = args.get("plugins")
        if not isinstance(plugins, dict):
            raise BadRequest("report needs a plugins object")
        for plugin_id, seen in plugins.items():
            p = self.plugins.get(plugin_id)
            if p is None or not isinstance(seen, dict):
                continue
            latencies = seen.get("latencies")
            if isinstance(latencies, list):
                record = p.stats.record
                for s in latencies[:REPORT_MAX_SAMPLES]:
                    if type(s) is float or type(s) is int:
                        record(float(s))
            timeouts = seen.get("timeouts")
            if type(timeouts) is int and timeouts > 0:
                p.on_direct_timeouts(timeouts)
        return {"ok": True}

    def http(self, args: dict[str, Any], rid: Any, answer: HttpAnswer, fail: HttpFail) -> None:
        """Forward one request to its plugin; the outcome goes to ``answer`` or ``fail``.

        Routing errors raise (the caller answers them); afterwards exactly one of
        ``answer(rid, payload, raw)`` (a valid reply: ``payload`` is its parsed payload and
        ``raw`` the JSON bytes of the plugin's whole reply message) or ``fail(rid, error)``
        follows.
        PERF: the hot path. ``args`` becomes the plugin's inner payload after popping the
        routing keys; nothing else is copied.
        """
        route = args.pop("route", None)
        if route is not None:
            if type(route) is not str:
                raise BadRequest("route must be a string")
            plugin = self.routes.get(route if route[:1] == "/" else "/" + route)
        else:
            plugin = self.plugins.get(args.pop("plugin", None))  # type: ignore[arg-type]
        if plugin is None or plugin.metadata is None:
            raise NotFound(f"no plugin serves route {route!r}")
        state = plugin.state
        launched = plugin.launched
        if state is not S.RUNNING or launched is None:
            if state is S.STARTING or state is S.BACKOFF or (state is S.RUNNING):
                raise Unavailable(
                    f"plugin {plugin.id} is {state.value}, try again shortly",
                    retry_after=plugin.retry_after(),
                )
            raise NotFound(f"plugin {plugin.id} is not enabled")
        if plugin.stopping:  # disable in progress: the route is going away
            raise NotFound(f"plugin {plugin.id} is being disabled")
        connection = launched.connection
        if connection.closed:  # died or reconnecting; state catches up in a moment
            raise Unavailable(f"plugin {plugin.id} is restarting, try again shortly", retry_after=1)
        if type(args.get("method")) is not str or type(args.get("path")) is not str:
            raise BadRequest("http needs string method and path")
        connection.relay_http(args, self.http_timeout, HttpRelay(plugin, rid, answer, fail))


class HttpRelay:
    """One proxied request in flight: checks the plugin's reply, records it, answers.

    The reply is checked by the SDK's one ``validate_http_reply`` (a missing ``status`` is
    200); a bad one is 502 ``bad_response`` (counted, and reported to the plugin's log and
    events, rate-limited). A valid reply goes to ``answer`` with the raw bytes of the
    plugin's message, already parsed and checked here.
    """

    __slots__ = ("answer", "fail", "plugin", "rid", "t0")

    def __init__(
        self, plugin: SupervisedPlugin, rid: Any, answer: HttpAnswer, fail: HttpFail
    ) -> None:
        self.plugin = plugin
        self.rid = rid
        self.answer = answer
        self.fail = fail
        self.t0 = time.monotonic()

    def relayed(self, msg: dict[str, Any], raw: bytes) -> None:
        payload = msg.get("payload")
        try:
            validate_http_reply(payload)
        except BadReply as exc:
            metrics.PROXY_ERRORS.labels(self.plugin.id, "bad_response").inc()
            self.plugin.on_bad_reply(str(exc))
            self.fail(self.rid, BadGateway(f"plugin {self.plugin.id} sent a bad reply: {exc}"))
            return
        self.plugin.stats.record(time.monotonic() - self.t0)
        self.answer(self.rid, payload, raw)  # type: ignore[arg-type]

    def __call__(self, reply: dict[str, Any] | None, err: ToruError | None) -> None:
        """The connection's error path (504 on the deadline, 502 when it broke)."""
        self.fail(self.rid, err or BadGateway(f"plugin {self.plugin.id} sent no reply"))


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = args.get(name, default)
    if v is None:
        return default
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"{name} must be an integer between {lo} and {hi}")
    return v
