"""Supervisor-owned Prometheus metrics (multiprocess mode, shared directory with workers).

Import this only after ``PROMETHEUS_MULTIPROC_DIR`` is set (``main`` does that): the
client picks its value backend at import time. Gauges are ``livemax``: the exposition shows
only live processes' values, so a killed supervisor's ``toru_plugin_up=1`` disappears instead
of being summed with the new supervisor's.

NOTE: ``toru_proxy_errors_total`` is counted once, in the worker, which sees every outcome
(supervisor unreachable included). The supervisor counts what only it can tell apart on the
plugin connection (``timeout``, ``bad_response``, ``connection_lost``) as
``toru_plugin_connection_errors_total``, so no failure is counted twice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Counter, Gauge

from .states import PluginState

PLUGIN_UP = Gauge(
    "toru_plugin_up",
    "1 when the plugin process runs and its connection is up",
    ["plugin"],
    multiprocess_mode="livemax",
)
PLUGIN_STATE = Gauge(
    "toru_plugin_state",
    "1 for the plugin's current supervision state, 0 for the others",
    ["plugin", "state"],
    multiprocess_mode="livemax",
)
SUPERVISOR_UP = Gauge(
    "toru_supervisor_up",
    "1 while a supervisor process runs (live-only: the series vanishes with the process)",
    multiprocess_mode="livemax",
)
PLUGIN_RESTARTS = Counter(
    "toru_plugin_restarts",
    "The supervisor's restarts of a plugin after a crash or hang (not an admin's restart or "
    "upgrade: docs/operations.md)",
    ["plugin"],
)
PLUGIN_CRASHES = Counter("toru_plugin_crashes", "Plugin crashes and forced kills", ["plugin"])
KV_OPERATIONS = Counter("toru_kv_operations", "Plugin KV operations", ["plugin", "action"])
PROXY_ERRORS = Counter(
    "toru_plugin_connection_errors",
    "Failures on the supervisor's plugin connection (timeout, bad_response, connection_lost)",
    ["plugin", "kind"],
)

LOG_WRITE_ERRORS = Counter(
    "toru_log_write_errors",
    "Failed writes to a log file (lines dropped meanwhile): log is plugin or supervisor",
    ["log", "plugin"],
)


def log_write_errors(log: str, plugin: str = "") -> Callable[[OSError], None]:
    """The ``on_error`` callback of a ``LogWriter``: counts into ``toru_log_write_errors_total``."""
    child = LOG_WRITE_ERRORS.labels(log, plugin)
    return lambda exc: child.inc()


def set_state(plugin: str, state: PluginState) -> None:
    """One-hot state gauge plus ``up``; the plugin's counters exist (at 0) from its first state.

    NOTE: Prometheus's rate()/increase() need a sample before the first increment, or a
    plugin's first crash never shows on the dashboard nor counts for the crash-loop alert.
    """
    PLUGIN_RESTARTS.labels(plugin)
    PLUGIN_CRASHES.labels(plugin)
    for s in PluginState:
        PLUGIN_STATE.labels(plugin, s.value).set(1 if s is state else 0)
    PLUGIN_UP.labels(plugin).set(1 if state is PluginState.RUNNING else 0)


def clear_plugin(plugin: str) -> None:
    """A plugin left the directory: zero its gauges (multiprocess files cannot drop labels)."""
    for s in PluginState:
        PLUGIN_STATE.labels(plugin, s.value).set(0)
    PLUGIN_UP.labels(plugin).set(0)


_PID_FILE = re.compile(r"_(\d+)\.db$")


def cleanup_dead_processes(directory: Path) -> int:
    """``mark_process_dead`` for every pid with files in ``directory`` that no longer runs."""
    from prometheus_client import multiprocess

    dead = set()
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        m = _PID_FILE.search(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid in dead:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:
            pass
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
    return len(dead)


def mark_self_dead(directory: Path) -> None:
    """On a clean exit: drop this process's live-gauge files so its values vanish at once."""
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(os.getpid(), str(directory))
    except OSError:
        pass
