"""Structured plugin logging: one JSON object per line on stderr.

The supervisor captures a plugin's stderr line by line; a line that is a JSON object with
``level`` and ``message`` keeps its level and extra fields in the plugin's log file (see
DESIGN.md, "Logs"). So the SDK never writes files itself: it writes JSON lines to stderr.

    ctx.log.info("counter incremented", count=3)
    -> {"timestamp": "...Z", "level": "info", "plugin": "hello-python",
        "message": "counter incremented", "count": 3}
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, TextIO

from .codec import dumps
from .messages import now_iso

__all__ = ["LEVELS", "PluginLogger"]

LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "error": 4}


class PluginLogger:
    """Writes JSON log lines; messages below ``level`` (env ``TORU_LOG_LEVEL``) are dropped."""

    def __init__(self, plugin: str, level: str | None = None, stream: TextIO | None = None):
        self.plugin = plugin
        name = (level or os.environ.get("TORU_LOG_LEVEL") or "info").lower()
        self.threshold = LEVELS.get("warn" if name == "warning" else name, LEVELS["info"])
        self._stream = stream

    def log(self, level: str, message: str, **fields: Any) -> None:
        """Write one entry. Extra keyword fields become top-level JSON keys."""
        if LEVELS.get(level, 2) < self.threshold:
            return
        entry: dict[str, Any] = {
            "timestamp": now_iso(),
            "level": level,
            "plugin": self.plugin,
            "message": str(message),
        }
        for k, v in fields.items():
            if k not in entry:
                entry[k] = v
        try:
            line = dumps(entry).decode("utf-8")
        except (TypeError, ValueError, OverflowError):
            entry = {
                k: v if isinstance(v, (str, int, float, bool)) else repr(v)
                for k, v in entry.items()
            }
            line = dumps(entry).decode("utf-8")
        stream = self._stream or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # stderr closed: logging must never take the plugin down
            pass

    def trace(self, message: str, **fields: Any) -> None:
        self.log("trace", message, **fields)

    def debug(self, message: str, **fields: Any) -> None:
        self.log("debug", message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.log("info", message, **fields)

    def warn(self, message: str, **fields: Any) -> None:
        self.log("warn", message, **fields)

    warning = warn

    def error(self, message: str, **fields: Any) -> None:
        self.log("error", message, **fields)

    def exception(self, message: str, exc: BaseException | None = None, **fields: Any) -> None:
        """Log at ``error`` with the current (or given) exception as ``error`` and ``traceback``."""
        if exc is None:
            exc = sys.exc_info()[1]
        if exc is not None:
            fields.setdefault("error", f"{type(exc).__name__}: {exc}")
            fields.setdefault(
                "traceback", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            )
        self.log("error", message, **fields)
