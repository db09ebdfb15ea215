"""``toru supervisor --home DIR``: the supervisor process (asyncio on uvloop).

Signals are handled in the loop (``loop.add_signal_handler`` only sets an event); the
shutdown itself runs as ordinary code: every plugin gets ``shutdown``, then SIGTERM, then
SIGKILL after ``shutdown_grace``; sockets are removed; exit code 0. A lock file under
``run/`` keeps a second supervisor of the same home from starting.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import sys
from typing import Any

from toru.config import Config, ConfigError, load_config
from toru.home_modes import open_for_plugins, tighten_home, unreachable
from toru_plugin_api.heap import freeze_startup_heap
from toru_plugin_api.malloc import keep_big_buffers

from .identity import IdentityError, PluginIdentities, missing_capabilities, resolve


def main(args: argparse.Namespace) -> int:
    """Entry point of ``toru supervisor``."""
    try:
        config = load_config(getattr(args, "home", None))
    except ConfigError as exc:
        print(f"toru supervisor: {exc}", file=sys.stderr)
        return 2
    keep_big_buffers()  # PERF: relayed bodies without a page fault per page
    return run_supervisor(config)


def prepare_dirs(config: Config) -> list[str]:
    """Create the home's directories (private: umask 077) and tighten an older home's
    modes; the changes, for a warning once the log is open."""
    for d in (config.plugins_dir, config.var_dir, config.plugin_log_dir, config.metrics_dir):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.plugin_socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return tighten_home(config)


Notes = list[tuple[str, str]]  # (log level, message) for the log once it is open


def plugin_identities(config: Config, notes: Notes) -> PluginIdentities:
    """Who plugins run as (settings plugins.*); opens run/ and the plugin directory just
    enough for them. Raises ``IdentityError``."""
    identities = resolve(
        config.plugins_user,
        config.plugins_group,
        config.plugins_isolation,
        config.plugins_uid_range,
        config.plugin_identities_file,
        lambda message: notes.append(("warn", message)),
    )
    apart = identities.per_plugin is not None or not identities.shared.is_self
    opened = open_for_plugins(config, apart)
    if opened:
        notes.append(("info", "opened for the plugins' user: " + ", ".join(opened)))
    who = identities.shared
    if apart and (missing := missing_capabilities()):
        target = "their own uids" if identities.per_plugin else who.describe()
        notes.append(
            (
                "error",
                f"plugins cannot start as {target}: Toru is not root and lacks "
                f"{', '.join(missing)} (the shipped units grant them: docs/operations.md)",
            )
        )
    if apart and (blocked := unreachable(config.plugins_dir, who.uid, who.gid)) is not None:
        notes.append(
            (
                "error",
                f"plugins cannot run: {who.name} cannot traverse {blocked} on the way to "
                f"{config.plugins_dir} (chmod o+x it)",
            )
        )
    return identities


def run_supervisor(config: Config) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 if another supervisor holds the home."""
    notes: Notes = []
    tightened = prepare_dirs(config)
    if tightened:
        notes.append(("warn", "tightened the modes of an existing home: " + ", ".join(tightened)))
    try:
        identities = plugin_identities(config, notes)
    except (IdentityError, OSError) as exc:
        print(f"toru supervisor: {exc}", file=sys.stderr)
        return 2
    # Must precede the first import of prometheus_client (toru.supervisor.metrics).
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(config.metrics_dir))
    lock_fd = os.open(config.run_dir / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(
            f"toru supervisor: another supervisor already runs for {config.home}", file=sys.stderr
        )
        os.close(lock_fd)
        return 1
    try:
        import uvloop

        uvloop.run(_serve(config, identities, notes))
    finally:
        os.close(lock_fd)
    return 0


async def _serve(config: Config, identities: PluginIdentities, notes: Notes) -> None:
    from toru.store import Store

    from . import metrics
    from .control_server import ControlServer
    from .logs import LogWriter, SupervisorLog
    from .supervisor import Supervisor

    store = Store(config.db_path)
    store.migrate()
    instance_id = store.instance_id()
    log = SupervisorLog(
        LogWriter(
            config.supervisor_log,
            config.log_max_bytes,
            config.log_backups,
            on_error=metrics.log_write_errors("supervisor"),
        ),
        echo=os.environ.get("TORU_SUPERVISOR_QUIET", "") == "",
    )
    if store.check_at_start():  # PRAGMA quick_check; /healthz reports it from now on
        log.error(f"the database {config.db_path} is damaged: {store.damage}")
    for level, message in notes:
        getattr(log, level)(message)
    log.info(identities.describe())
    metrics.cleanup_dead_processes(config.metrics_dir)
    metrics.SUPERVISOR_UP.set(1)  # ToruSupervisorDown watches it, with or without plugins
    supervisor = Supervisor(config, store, log, instance_id, identities=identities)
    server = ControlServer(supervisor, config.control_socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: dict[str, Any] = {}

    def on_signal(sig: signal.Signals) -> None:
        received.setdefault("signal", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    async def ready() -> None:
        # First, before any discovery: `list`, `get` and `hello` answer at once.
        await server.start()
        freeze_startup_heap()  # PERF: the p99 of every relayed request (toru_plugin_api/heap.py)
        log.info(f"supervisor ready (pid {os.getpid()}, control socket {config.control_socket})")

    log.info(f"supervisor starting for {config.home}")
    try:
        await supervisor.run(stop, ready)
    finally:
        await server.close()
        log.info(f"supervisor stopped ({received.get('signal', 'no signal')})")
        log.writer.close()
        store.close()
        metrics.mark_self_dead(config.metrics_dir)
