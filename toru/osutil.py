"""The one ``PR_SET_PDEATHSIG`` helper (a child that dies with its parent), and the
ambient-capability drop of a plugin's child.

Used in a forked child before ``exec`` (plugins, ``toru serve``'s children) and in gunicorn's
``post_fork``. libc is loaded here, at import, so the child only makes the ``prctl`` call.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
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


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


# Built at import: the forked child only makes the calls.
_CAP_V3 = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
_NO_CAPS = (_CapData * 2)()
try:
    _capset: Any = ctypes.CDLL(None, use_errno=True).capset
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _capset = None


def drop_capabilities() -> None:
    """Empty every capability set (effective, permitted, inheritable, ambient), so the
    program exec'd next starts with none.

    NOTE: a switch between two non-root uids keeps capabilities (only leaving uid 0 clears
    them, and never the inheritable set), so a supervisor given ``AmbientCapabilities=`` by
    systemd must drop them in a plugin's child itself. Raises ``OSError`` if it cannot.
    """
    if _prctl is not None:
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if _capset is not None and _capset(ctypes.byref(_CAP_V3), _NO_CAPS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
