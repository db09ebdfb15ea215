"""The supervisor's core: the plugin registry and every operation the control server offers.

It owns all plugin state. Plugins are keyed by id (routes index the valid ones); each
enabled plugin has one lifecycle task in the supervisor's TaskGroup; one periodic task does
the health checks, the cheap directory check (and the retries of ``--metadata`` probes
that gave no answer) and the daily event pruning.

Start-up order (docs/ARCHITECTURE.md): the control socket opens first, so ``list``/``get``
answer at once; binaries whose metadata is remembered (supervisor_state.py) are registered
without a probe and their enabled plugins spawned; the others are listed as
``discovering`` while their ``--metadata`` runs, at most ``CONCURRENT_PROBES`` at a time.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import apsw

from toru.config import Config
from toru.errors import BadGateway, BadRequest, Conflict, NotFound, Unavailable
from toru.store import Store
from toru_plugin_api.codec import ProtocolError
from toru_plugin_api.messages import parse_kv_op

from . import metrics
from .cgroups import PluginCgroups, without_cgroups
from .discovery import (
    CONCURRENT_PROBES,
    Discovered,
    Discovering,
    directory_signature,
    inspect_all,
    list_binaries,
    resolve_conflicts,
)
from .http_relay import HttpAnswer, HttpFail, HttpRelay, request_parts
from .identity import Identity, PluginIdentities
from .install import check_clash, commit, is_stage, prepare, sweep_stages
from .instance import UpgradeFailed
from .kv_channel import execute_kv
from .launcher import Launcher, ProcessLauncher, plugin_socket, sweep_instance_dirs
from .logs import LEVELS, SupervisorLog, normalize_level, read_logs
from .pin_gate import PinGate
from .plugin_state_file import PluginStateFile
from .restart_policy import RestartPolicy
from .states import PluginState
from .supervised import Deps, SupervisedPlugin, wall_time
from .supervisor_state import SupervisorState

S = PluginState
PRUNE_EVERY = 24 * 3600.0
STAGE_MAX_AGE = 24 * 3600.0  # a staged install file older than this was abandoned


class Supervisor:
    """Registry of plugins and the operations on them (transport-agnostic)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        log: SupervisorLog,
        instance_id: str,
        launcher: Launcher | None = None,
        identities: PluginIdentities | None = None,
    ) -> None:
        self.config = config
        self.identities = identities  # who plugins run as (None: Toru's own user)
        self.store = store
        self.log = log
        self.instance_id = instance_id
        self.metadata_timeout = config.metadata_timeout
        self.socket_wait = config.start_timeout
        self.started_at = time.time()
        self.plugins: dict[str, SupervisedPlugin] = {}
        self.routes: dict[str, SupervisedPlugin] = {}
        self.discovering: dict[Path, Discovering] = {}
        self.memory = SupervisorState(config.supervisor_state_file)
        if self.memory.load_error:
            log.warn(
                "supervisor state unreadable; starting without it", error=self.memory.load_error
            )
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
            identities=identities,
        )
        self._tg: asyncio.TaskGroup | None = None
        self._rescan_lock = asyncio.Lock()
        self._rescan_task: asyncio.Task[Any] | None = None
        self._dir_sig: Any = None
        self.closing = False
        self.discovery_done = False  # the first rescan after start has finished
        self.http_timeout = config.http_timeout
        self.state_file = PluginStateFile(config.state_file, log)  # faults: damaged config.json
        self.pin_gate = PinGate(config.pins_file, config.pin_binaries, log)  # binary integrity

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
            http_timeout=self.config.http_timeout,
            persist_enabled=self._persist,
            persist_failures=self._persist_failures,
            spawn_task=tg.create_task,
            verify_binary=self.pin_gate.verify,
        )

    async def run(
        self, stop: asyncio.Event, ready: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        """Open the control socket, discover, start the enabled plugins, supervise until
        ``stop``, then stop them all.

        ``ready`` (opening the control socket) is awaited first, before any discovery, so a
        restarted supervisor answers ``list`` and ``hello`` at once; plugins not up yet are
        ``discovering`` or ``starting``, and their routes answer 503 with ``retry_after``.
        """
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if ready is not None:
                await ready()
            sweep_instance_dirs(self.config.plugin_socket_dir)
            self._prune()
            periodic = tg.create_task(self._periodic())
            self._rescan_task = tg.create_task(self._first_discovery())
            await stop.wait()
            self.closing = True  # no enable/rescan may start a plugin from here on
            periodic.cancel()
            self._rescan_task.cancel()  # a stop does not wait for slow --metadata probes
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
            socket_dir = plugin_socket(self.config.plugin_socket_dir, p.id, p.spec.instance).parent
            shutil.rmtree(socket_dir, True)
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
                        p.check_health(mono)
                if now >= next_rescan:
                    next_rescan = now + cfg.rescan_interval
                    if directory_signature(cfg.plugins_dir) != self._dir_sig or any(
                        d.due(time.monotonic()) for d in self.discovering.values()
                    ):
                        self._rescan_in_background()
                if now >= next_prune:
                    next_prune = now + PRUNE_EVERY
                    self._prune()
            except Exception as exc:  # a bug here must not end supervision of every plugin
                self.log.error("periodic check failed", error=repr(exc))

    def _rescan_in_background(self) -> None:
        """A rescan as its own task: slow ``--metadata`` probes must not delay health checks."""
        task = self._rescan_task
        if (task is not None and not task.done()) or self._tg is None:
            return
        self._rescan_task = self._tg.create_task(self._background_rescan())

    async def _first_discovery(self) -> None:
        await self._background_rescan()
        self.discovery_done = True
        self.log.info(
            f"discovery done: {len(self.plugins)} plugins,"
            f" {len(self.discovering)} without metadata yet"
        )

    async def _background_rescan(self) -> None:
        try:
            await self.rescan(retry_all=False)
        except Unavailable:
            pass  # shutting down
        except Exception as exc:  # a bug here must not end the TaskGroup
            self.log.error("rescan failed", error=repr(exc))

    def _persist_failures(self, plugin_id: str, count: int) -> None:
        try:
            self.memory.set_failures(plugin_id, count)
        except OSError as exc:
            self.log.error("could not save the failure count", plugin_id, error=str(exc))

    def _remember(self, d: Discovered) -> None:
        if d.metadata is None:
            return
        try:
            self.memory.remember_metadata(d.binary, d.signature, d.metadata)
        except OSError as exc:
            self.log.error("could not save plugin metadata", d.id, error=str(exc))

    def _prune(self) -> None:
        stale = sweep_stages(self.config.plugins_dir, STAGE_MAX_AGE, time.time())
        if stale:
            self.log.info(f"removed {len(stale)} abandoned install files", files=stale)
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

    async def rescan(self, retry_all: bool = True) -> dict[str, Any]:
        """Sync the registry with ``plugins/*.binary``: new, changed and removed binaries.

        ``retry_all`` (the ``rescan`` operation) also probes again at once every binary
        whose ``--metadata`` gave no answer; the periodic check retries them when due.
        """
        async with self._rescan_lock:
            if self.closing:
                raise Unavailable("the supervisor is shutting down")
            return await self._rescan(retry_all)

    async def _rescan(self, retry_all: bool) -> dict[str, Any]:
        cfg = self.config
        self._dir_sig = directory_signature(cfg.plugins_dir)
        binaries = list_binaries(cfg.plugins_dir)
        by_binary = {p.binary: p for p in self.plugins.values()}
        gone = [p for b, p in by_binary.items() if b not in binaries]
        removed_ids = [p.id for p in gone]
        for p in gone:
            await self._retire(p, "binary removed")
        for b, p in by_binary.items():
            sig = binaries.get(b)
            if sig is None or sig == p.signature or p.keeps_serving(sig):
                continue
            if not await self._held_back(p, True):  # an unpinned file waits for an approve
                try:
                    await self._binary_replaced(p, Discovered(b, sig))
                except UpgradeFailed:
                    pass  # recorded (event, log, ``upgrade_error``); the old one serves on
        for b, d in list(self.discovering.items()):
            if binaries.get(b) != d.signature:
                del self.discovering[b]  # removed, or replaced: a fresh start below
        fresh = {b: sig for b, sig in binaries.items() if b not in by_binary}
        state = self.state_file.load()
        found: list[Discovered] = []
        probe: dict[Path, tuple[int, int]] = {}
        now = time.monotonic()
        for b, sig in fresh.items():
            waiting = self.discovering.get(b)
            if waiting is not None:
                if retry_all or waiting.due(now):
                    probe[b] = sig
                continue
            known = self.memory.known_metadata(b, sig)
            if known is not None:
                # NOTE: unchanged since its last probe: no hash here (a restart lists every
                # plugin at once); a forged mtime and size are caught before the spawn.
                found.append(Discovered(b, sig, metadata=known))
                continue
            if b not in by_binary and await self._hold_unapproved(b, sig, state):
                continue
            probe[b] = sig
            entry = Discovering(b, sig)
            entry.enabled = bool(state.get(entry.id, {}).get("enabled"))
            self.discovering[b] = entry
        try:
            self.memory.forget_binaries(set(binaries))
        except OSError as exc:
            self.log.error("could not save the supervisor state", error=str(exc))
        # Remembered ones are registered (and spawned) before the slow probes of the others.
        added = self._admit(found, state)
        if probe:
            results = await inspect_all(probe, self.metadata_timeout, identity=self._prober())
            if self.closing:
                raise Unavailable("the supervisor is shutting down")
            answered = [d for d in results if self._settle(d)]
            added += self._admit(answered, self.state_file.load())
        for pid in removed_ids:
            metrics.clear_plugin(pid)
        if added or removed_ids:
            self.log.info(
                f"rescan: {len(added)} added, {len(removed_ids)} removed, {len(self.plugins)} total"
            )
        return {"added": added, "removed": removed_ids, "total": len(self.plugins)}

    def _settle(self, d: Discovered) -> bool:
        """A probe's outcome: True if it answered (valid or not); else schedule a retry."""
        entry = self.discovering.get(d.binary)
        if not d.transient:
            self.discovering.pop(d.binary, None)
            self._remember(d)
            return True
        if entry is None or entry.signature != d.signature:
            return False  # replaced while probing: the next rescan sees the new file
        entry.attempts += 1
        delay = self.policy.delay(entry.attempts)
        entry.retry_at = time.monotonic() + delay
        entry.error = f"{d.error}; retrying in {delay:g} s (attempt {entry.attempts})"
        self.log.warn(f"no metadata from {d.binary.name}", entry.id, error=entry.error)
        return False

    def _admit(
        self, found: list[Discovered], state: dict[str, Any], replaced: frozenset[str] = frozenset()
    ) -> list[str]:
        """Register what discovery answered, record the invalid ones, enable the enabled."""
        claimed_ids = {p.id: p.binary for p in self.plugins.values() if p.metadata}
        claimed_routes = {p.route: p.binary for p in self.plugins.values() if p.route}
        resolve_conflicts(found, claimed_ids, claimed_routes)
        added = []
        for d in found:
            plugin = self._register(d)
            if plugin.id not in replaced:
                added.append(plugin.id)
            if plugin.state is S.INVALID:
                self.log.error(f"invalid plugin {d.binary.name}", plugin.id, error=plugin.error)
                plugin.record_event("invalid", {"binary": d.binary.name, "reason": plugin.error})
            elif state.get(plugin.id, {}).get("enabled"):
                plugin.enable()
        return added

    async def _retire(self, plugin: SupervisedPlugin, reason: str) -> None:
        """Stop and unregister a plugin whose binary is gone or gives way to a new one."""
        await plugin.disable(reason)
        plugin.close_log()
        self._unregister(plugin)
        self._persist_failures(plugin.id, 0)  # a new binary starts with a clean count

    async def _binary_replaced(self, plugin: SupervisedPlugin, discovered: Discovered) -> None:
        """``plugin``'s binary was replaced by ``discovered`` (or, for a restart, is the same).

        A plugin that serves (enabled, ``running``) is upgraded without downtime: the new
        binary's ``--metadata`` is read while the old process serves, then
        ``SupervisedPlugin.upgrade`` starts it beside the old one, switches to it once it is
        healthy and retires the old one. A failing new version (no or bad metadata, another
        id, a route another plugin has, a crash at start, never healthy) is stopped, the old
        process serves on, and ``upgrade_failed`` says why; the binary is not retried while
        the old process serves (``keeps_serving``). Event ``upgraded`` (old and new pid) on
        success. Any other plugin is stopped, unregistered and the new binary admitted as
        a fresh one. Raises ``UpgradeFailed`` after recording it (``restart`` answers it).
        """
        found = await self._probe(discovered)
        if not (plugin.enabled and plugin.state is S.RUNNING):
            await self._retire(plugin, "binary replaced")
            self._admit_one(found, plugin.id)
            return
        restart = discovered.signature == plugin.signature
        base = {"binary": discovered.binary.name, **({"restart": True} if restart else {})}
        try:
            self._check_successor(plugin, found)
            details = await plugin.upgrade(found)
        except UpgradeFailed as exc:
            plugin.upgrade_failed(discovered.signature, exc.reason)
            plugin.record_event("upgrade_failed", {**base, "reason": exc.reason, **exc.details})
            raise
        old_route = next((r for r, p in self.routes.items() if p is plugin), None)
        if old_route != plugin.route:
            self.routes.pop(old_route, None)  # type: ignore[arg-type]
            if plugin.route:
                self.routes[plugin.route] = plugin
        self._remember(found)
        plugin.record_event("upgraded", {**base, **details})

    def _check_successor(self, plugin: SupervisedPlugin, found: Discovered) -> None:
        """Can ``found`` take over from ``plugin``? ``UpgradeFailed`` says why not."""
        if found.metadata is None:
            raise UpgradeFailed(f"the new version's --metadata failed: {found.error}")
        if found.id != plugin.id:
            raise UpgradeFailed(f"the new version declares the id {found.id!r}, not {plugin.id!r}")
        owner = self.routes.get(found.metadata.route)
        if owner is not None and owner is not plugin:
            raise UpgradeFailed(f"the new version's route {found.metadata.route} is {owner.id}'s")

    async def _probe(self, d: Discovered) -> Discovered:
        """``d`` with its metadata: remembered for this exact file, or read now."""
        if d.metadata is not None or d.error is not None:
            return d
        known = self.memory.known_metadata(d.binary, d.signature)
        if known is not None:
            return Discovered(d.binary, d.signature, metadata=known)
        probe = {d.binary: d.signature}
        (result,) = await inspect_all(probe, self.metadata_timeout, identity=self._prober())
        return result

    def _prober(self) -> Identity | None:
        """Who runs ``--metadata`` (never Toru's own user when plugins run as another)."""
        return self.identities.shared if self.identities else None

    def _admit_one(self, found: Discovered, replaced_id: str) -> None:
        """Admit one probed binary as ``_rescan`` does (no answer: retried with backoff)."""
        if found.transient:
            entry = Discovering(found.binary, found.signature)
            entry.enabled = bool(self.state_file.load().get(entry.id, {}).get("enabled"))
            self.discovering[found.binary] = entry
            self._settle(found)
            return
        self._remember(found)
        self._admit([found], self.state_file.load(), frozenset({replaced_id}))

    def _register(self, d: Discovered, plugin_id: str | None = None) -> SupervisedPlugin:
        pid = plugin_id or d.id
        existing = self.plugins.get(pid)
        if existing is not None and plugin_id is None:
            if d.metadata is not None and existing.metadata is None:
                # An invalid binary only borrowed this id from its file name: a valid plugin
                # owns it, the invalid one is listed under its file name instead.
                del self.plugins[pid]
                existing.id = existing.binary.name
                self.plugins[existing.id] = existing
            else:
                pid = d.binary.name
        plugin = SupervisedPlugin(d, self._deps(), pid, self.memory.failures.get(pid, 0))
        self.plugins[plugin.id] = plugin
        if plugin.route:
            self.routes[plugin.route] = plugin
        return plugin

    def _unregister(self, plugin: SupervisedPlugin) -> None:
        self.plugins.pop(plugin.id, None)
        if plugin.route and self.routes.get(plugin.route) is plugin:
            del self.routes[plugin.route]

    # ------------------------------------------------------------------ pinning (pin_gate.py)

    async def _held_back(self, plugin: SupervisedPlugin, present: bool) -> bool:
        """The gate in front of the "binary replaced" path: True (and ``binary_changed``)
        when the new file is not the pinned one, so it is neither probed nor run."""
        change = await self.pin_gate.change_of(plugin.id, plugin.binary) if present else None
        if change is None:
            plugin.binary_change = None
            return False
        plugin.mark_changed(change)
        return True

    async def _hold_unapproved(
        self, binary: Path, sig: tuple[int, int], state: dict[str, Any]
    ) -> bool:
        """A binary first seen by this supervisor whose pin it does not match (replaced
        while Toru was down): listed as ``changed`` under its pinned id, never probed."""
        held = await self.pin_gate.unapproved_at_start(binary)
        if held is None or held[0] in self.plugins:
            return False
        plugin_id, change = held
        known = self.memory.last_metadata(binary)
        if known is not None and known.id != plugin_id:
            known = None
        d = Discovered(binary, sig, metadata=known, error="binary changed: waiting for approval")
        plugin = self._register(d, plugin_id)
        plugin.enabled = bool(state.get(plugin_id, {}).get("enabled"))
        plugin.mark_changed(change)
        self.discovering.pop(binary, None)
        return True

    async def approve(self, plugin_id: Any) -> dict[str, Any]:
        """Pin the changed binary an admin reviewed, then let the replaced path run it."""
        p = await self._described(plugin_id)
        change = await self.pin_gate.approve(p)
        p.record_event("approved", {"old_sha256": change.pinned, "new_sha256": change.found})
        self._binary_approved(p)
        await self.rescan()
        return await self._settled_info(p.id)

    def _binary_approved(self, p: SupervisedPlugin) -> None:
        """Seam to the rescan's "binary replaced" branch: forget what is known about the old
        file, so the next rescan takes this plugin through it (probe, then start or swap)."""
        p.binary_change = None
        p.signature = (-1, -1)
        try:
            self.memory.forget(p.binary)
        except OSError as exc:
            self.log.error("could not save the supervisor state", p.id, error=str(exc))

    async def _settled_info(self, plugin_id: str) -> dict[str, Any]:
        p = self.plugins.get(plugin_id)
        if p is None:
            raise NotFound(f"plugin {plugin_id} is gone after the rescan")
        await p.wait_started(self.socket_wait + 1.0)
        return p.info()

    async def install(self, args: dict[str, Any]) -> dict[str, Any]:
        """Control op ``install`` ``{"path", "enable"?, "uploaded"?}`` (install.py)."""
        path, enable, uploaded = args.get("path"), args.get("enable", False), args.get("uploaded")
        if not isinstance(path, str) or not path.startswith("/"):
            raise BadRequest("install needs an absolute path")
        if not isinstance(enable, bool):
            raise BadRequest("enable must be true or false")
        plugins_dir = self.config.plugins_dir
        src = Path(path)
        if uploaded is True and not is_stage(src, plugins_dir):
            raise BadRequest("an uploaded install must be a staged file in the plugin directory")
        try:
            prepared = await prepare(
                src,
                plugins_dir,
                uploaded=uploaded is True,
                timeout=self.metadata_timeout,
                identity=self.identities.shared if self.identities else None,
            )
        except OSError as exc:
            raise BadRequest(f"cannot install {src.name}: {exc.strerror or exc}") from None
        try:
            ids = {p.id: p.binary.name for p in self.plugins.values() if p.metadata}
            routes = {p.route: (p.id, p.binary.name) for p in self.plugins.values() if p.route}
            check_clash(prepared, ids, routes)
            pins = self.pin_gate if self.pin_gate.enabled else None
            result = commit(prepared, plugins_dir, pins)
        except OSError as exc:  # e.g. the uploading worker gave up and removed its stage
            raise BadRequest(f"cannot install {src.name}: {exc.strerror or exc}") from None
        finally:
            prepared.discard()
        self.pin_gate.hasher.remember(plugins_dir / result["binary"], result["sha256"])
        if enable:
            self._persist(result["id"], True)
        await self.rescan()
        result["plugin"] = await self._settled_info(result["id"])
        return result

    # ------------------------------------------------------------------ operations

    def plugin(self, plugin_id: Any) -> SupervisedPlugin:
        p = self.plugins.get(plugin_id) if isinstance(plugin_id, str) else None
        if p is None:
            waiting = self._discovering(plugin_id)
            if waiting is not None:
                raise Unavailable(
                    f"plugin {plugin_id} is still being discovered (its --metadata has not"
                    " answered yet), try again shortly",
                    retry_after=self._discovery_retry_after(),
                )
            raise NotFound(f"unknown plugin {plugin_id!r}")
        return p

    async def _described(self, plugin_id: Any) -> SupervisedPlugin:
        """``plugin``, first waiting out the first ``--metadata`` probe of its binary if it
        is still under way (an enable right after a start then just works); a binary whose
        probe already failed answers 503 with ``retry_after`` at once."""
        rounds = len(self.discovering) / CONCURRENT_PROBES + 1
        deadline = time.monotonic() + self.metadata_timeout * rounds + 1.0
        while time.monotonic() < deadline:
            waiting = self._discovering(plugin_id)
            if waiting is None or waiting.attempts > 0:
                break
            await asyncio.sleep(0.05)
        return self.plugin(plugin_id)

    def _discovering(self, plugin_id: Any) -> Discovering | None:
        for d in self.discovering.values():
            if d.id == plugin_id and plugin_id not in self.plugins:
                return d
        return None

    def _discovery_retry_after(self) -> int:
        now = time.monotonic()
        waits = [d.retry_at - now for d in self.discovering.values() if d.retry_at is not None]
        return max(1, math.ceil(min(waits, default=1.0)))

    def _discovering_info(self, d: Discovering) -> dict[str, Any]:
        return d.info(wall_time(d.retry_at, time.monotonic) if d.retry_at else None)

    def list(self) -> list[dict[str, Any]]:
        out = [p.info() for p in self.plugins.values()]
        out += [self._discovering_info(d) for d in self.discovering.values()]
        return sorted(out, key=lambda i: i["id"])

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
        if plugin_id not in self.plugins:
            waiting = self._discovering(plugin_id)
            if waiting is not None:
                # the same shape as a discovered plugin's: the UI reads ``cgroup`` too
                return {
                    **self._discovering_info(waiting),
                    "events": [],
                    "cgroup": self._cgroup(plugin_id),
                }
        p = self.plugin(plugin_id)
        return {**p.info(), "events": self.store.events(p.id, 20), "cgroup": self._cgroup(p.id)}

    def _cgroup(self, plugin_id: str) -> dict[str, Any]:
        """Where the plugin runs and whether its configured limits are enforced."""
        if self.cgroups is not None:
            p = self.plugins.get(plugin_id)
            return self.cgroups.describe(plugin_id, p.spec.instance if p is not None else 0)
        limits = self.config.limits_by_plugin().get(plugin_id)
        return without_cgroups(self.cgroups_reason, limits)

    async def enable(self, plugin_id: Any) -> dict[str, Any]:
        """Enable, persist, and return once the plugin left ``starting`` (or soon after)."""
        p = await self._described(plugin_id)
        if self.closing:
            raise Unavailable("the supervisor is shutting down")
        if p.state is S.INVALID:
            raise Conflict(f"plugin {p.id} is invalid: {p.error}")
        await self.pin_gate.pin_for_enable(p)
        was = p.enabled and p.active
        self._persist(p.id, True)
        await p.start()
        if not was:
            p.record_event("enabled", {})
        await p.wait_started(self.socket_wait + 1.0)
        return p.info()

    async def restart(self, plugin_id: Any) -> dict[str, Any]:
        """Graceful restart: an upgrade to the binary on disk (``_binary_replaced``), so no
        request in flight is lost. 409 unless enabled; a plugin in backoff restarts at once.
        A new process that fails is 502 with the reason, and the old one serves on."""
        p = await self._described(plugin_id)
        if self.closing:
            raise Unavailable("the supervisor is shutting down")
        if not p.enabled:
            raise Conflict(f"plugin {p.id} is not enabled")
        if p.state is S.BACKOFF:
            p.restart_now()
            await p.wait_started(self.socket_wait + 1.0)
            return p.info()
        if p.state is not S.RUNNING:
            raise Conflict(f"plugin {p.id} is {p.state.value}, try again shortly")
        sig = list_binaries(self.config.plugins_dir).get(p.binary)
        if sig is None:
            raise Conflict(f"the binary of plugin {p.id} ({p.binary.name}) is gone")
        if sig != p.signature and await self._held_back(p, True):
            raise Conflict(
                f"the binary of plugin {p.id} changed: approve it first", code="binary_changed"
            )
        async with self._rescan_lock:  # one swap at a time, never beside a rescan's
            try:
                await self._binary_replaced(p, Discovered(p.binary, sig))
            except UpgradeFailed as exc:
                raise BadGateway(f"plugin {p.id} was not restarted: {exc.reason}") from None
        return self.plugin(p.id).info()

    async def disable(self, plugin_id: Any) -> dict[str, Any]:
        """Disable, persist, and return once the process is gone."""
        p = await self._described(plugin_id)
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

    def http(
        self,
        args: dict[str, Any],
        rid: Any,
        answer: HttpAnswer,
        fail: HttpFail,
        body: bytes | memoryview | None = None,
    ) -> None:
        """Forward one request to its plugin; the outcome goes to ``answer`` or ``fail``.

        ``body`` is the tail of the op's binary frame (``http_relay.request_parts``: the
        request's JSON and body, or the body alone), None when ``args`` carries it all.
        Routing and request errors raise (the caller answers them); afterwards exactly one
        of ``answer(rid, payload, raw, reply_body)`` (a valid reply: ``payload`` is its
        parsed payload, ``raw`` the JSON bytes of the plugin's whole reply message and
        ``reply_body`` the raw body of a binary reply, else None) or ``fail(rid, error)``
        follows (``http_relay.HttpRelay``).
        """
        route = args.pop("route", None)
        if route is not None:
            if type(route) is not str:
                raise BadRequest("route must be a string")
            plugin = self.routes.get(route if route[:1] == "/" else "/" + route)
        else:
            plugin = self.plugins.get(args.pop("plugin", None))  # type: ignore[arg-type]
        if plugin is None or plugin.metadata is None:
            if self._first_discovery_pending():
                raise Unavailable(
                    "plugins are still being discovered, try again shortly",
                    retry_after=self._discovery_retry_after(),
                )
            raise NotFound(f"no plugin serves route {route!r}")
        connection = plugin.admission()
        request, body = request_parts(args, body)
        connection.relay_http(
            request, self.http_timeout, HttpRelay(plugin, rid, answer, fail), body
        )

    def _first_discovery_pending(self) -> bool:
        """Some binary's metadata is not known yet and is still being tried in earnest: its
        route may be the one asked for, so 503 (try again) rather than 404."""
        limit = self.policy.max_failures
        return any(d.attempts < limit for d in self.discovering.values())


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = args.get(name, default)
    if v is None:
        return default
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"{name} must be an integer between {lo} and {hi}")
    return v
