"""Plugin states and the one table of allowed transitions.

``SupervisedPlugin._set_state`` is the only place that changes a plugin's state; it checks
this table, updates the metrics, bumps the route generation and writes the event, so the
four can never disagree.

::

    stopped ──enable──▶ starting ──socket+init──▶ running
       ▲                 │   ▲                     │
       │                 │   └──── backoff ◀───────┤ crash / hang
       │                 ▼          │  ▲           │
       └──── stopping ◀──┴──────────┘  └─ crash ───┘
                  (disable: shutdown, SIGTERM, SIGKILL)
    starting/running ──too many failures──▶ failed ──enable──▶ starting
    stopped/failed ──binary replaced by a bad one──▶ invalid
    stopped/starting/backoff/failed/invalid ──hash != pin──▶ changed ──approve──▶ starting
                                              (supervisor/pins.py; a running old version
                                               keeps ``running`` with ``binary_change`` set)
"""

from __future__ import annotations

import enum


class PluginState(enum.Enum):
    STOPPED = "stopped"  # disabled (or not yet enabled)
    STARTING = "starting"  # spawned, waiting for its socket / init
    RUNNING = "running"  # connected and initialised
    BACKOFF = "backoff"  # crashed, restart pending
    STOPPING = "stopping"  # being disabled: shutdown, SIGTERM, SIGKILL after the grace
    FAILED = "failed"  # disabled after too many consecutive failures
    INVALID = "invalid"  # bad metadata or binary
    CHANGED = "changed"  # the binary is not the one an admin approved: not run until approved

    def __str__(self) -> str:
        return self.value


S = PluginState

TRANSITIONS: dict[PluginState, frozenset[PluginState]] = {
    S.STOPPED: frozenset({S.STARTING, S.INVALID, S.CHANGED}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.FAILED, S.STOPPING, S.CHANGED}),
    S.RUNNING: frozenset({S.BACKOFF, S.FAILED, S.STOPPING}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPING, S.CHANGED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED, S.INVALID, S.CHANGED}),
    S.INVALID: frozenset({S.STOPPED, S.CHANGED}),
    S.CHANGED: frozenset({S.STARTING, S.STOPPED}),
}

# States in which the plugin is wanted (enabled) and will be (re)started.
ACTIVE = frozenset({S.STARTING, S.RUNNING, S.BACKOFF})


class IllegalTransition(RuntimeError):
    """A bug: some code tried a transition the table does not allow."""


def check_transition(old: PluginState, new: PluginState) -> None:
    """Raise ``IllegalTransition`` unless ``old -> new`` is in the table."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"illegal plugin state transition {old} -> {new}")
