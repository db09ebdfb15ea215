"""The one ``PR_SET_PDEATHSIG`` helper: a child that dies with its parent.

Used in a forked child before ``exec`` (plugins, ``toru serve``'s children) and in gunicorn's
``post_fork``. libc is loaded here, at import, so the child only makes the ``prctl`` call.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

_PR_SET_PDEATHSIG = 1
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _prctl = None


def die_with_parent(sig: int, parent_pid: int) -> None:
    """Ask the kernel to send ``sig`` when the parent dies; exit at once if it already has.

    ``parent_pid`` is the pid the caller expects as its parent (read before the fork, or
    right before this call): if ``getppid()`` differs after the ``prctl``, the parent died in
    between and no signal will ever come, so the child exits (status 1).
    NOTE: PDEATHSIG fires when the parent *thread* that forked exits, so fork from a thread
    that lives as long as the parent process (the event loop's).
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)
