"""JSON-lines logs: the writer (size rotation) and the reader (newest first, paged, filtered).

The supervisor is the only writer of each file, so rotation needs no locking: ``<name>.log``
is current, ``<name>.log.1`` the previous one, up to ``.log.<backups>``.
Each line: ``{"timestamp", "level", "plugin", "message", "error"?, ...extra}``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from toru_plugin_api.codec import dumps, loads
from toru_plugin_api.messages import now_iso

LEVELS = ("trace", "debug", "info", "warn", "error")
_RANK = {name: i for i, name in enumerate(LEVELS)}
_ALIASES = {
    "warning": "warn",
    "critical": "error",
    "fatal": "error",
    "err": "error",
    "notice": "info",
}
MAX_LINE = 64 * 1024  # a longer line from a plugin is truncated, never buffered without bound


def normalize_level(level: Any, default: str = "info") -> str:
    """Map any spelling (``WARNING``, ``fatal``) onto one of ``LEVELS``."""
    if not isinstance(level, str):
        return default
    s = level.strip().lower()
    s = _ALIASES.get(s, s)
    return s if s in _RANK else default


def level_rank(level: str) -> int:
    return _RANK.get(normalize_level(level), _RANK["info"])


LogErrorCallback = Callable[[OSError], None]
RETRY_AFTER_ERROR = 1.0  # seconds: a failing log is retried at most this often
WARN_EVERY = 60.0  # seconds between stderr warnings about one failing log
REOPEN_CHECK_EVERY = 1.0  # seconds between checks that the open file is still ``path``


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


class LogWriter:
    """Appends JSON lines to ``path``, rotating at ``max_bytes`` keeping ``backups`` files.

    A log that cannot be written (ENOSPC, EIO, EROFS, EACCES, its directory removed) never
    raises: the lines are dropped, ``on_error`` is called once per failed attempt (the
    supervisor counts ``toru_log_write_errors_total``), stderr gets one warning a minute, and
    the writer tries again (reopening the file, recreating the directory) at most once a
    second, so logging resumes by itself when the disk has room again. The open file is also
    checked once a second against ``path`` so a removed file or directory is recreated
    instead of written into an unlinked inode.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 5,
        on_error: LogErrorCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.on_error = on_error
        self.clock = clock
        self._f: Any = None
        self._size = 0
        self._inode: tuple[int, int] | None = None
        self._next_check = 0.0
        self._retry_at = 0.0  # while failing: drop lines until then
        self._failing: OSError | None = None
        self._dropped = 0
        self._warned_at = -math.inf

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # 0600 whatever the umask: logs carry request details and plugin output
        self._f = open(self.path, "ab", opener=_private)  # noqa: SIM115 - writer's life
        st = os.fstat(self._f.fileno())
        self._inode = (st.st_dev, st.st_ino)
        self._size = self._f.tell()

    def _still_ours(self) -> bool:
        """Is the open file still the one at ``path`` (not removed or moved away)?"""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    def _rotate(self) -> None:
        self.close()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)

    def write(self, entry: dict[str, Any]) -> None:
        """Append one entry (buffered; call ``flush`` when a batch is done). Never raises
        ``OSError``: see the class doc."""
        now = self.clock()
        if self._failing is not None and now < self._retry_at:
            self._dropped += 1  # PERF: before encoding, so a flood on a full disk costs little
            return
        line = dumps(entry) + b"\n"
        try:
            if self._f is not None and now >= self._next_check:
                self._next_check = now + REOPEN_CHECK_EVERY
                if not self._still_ours():
                    self.close()
            if self._f is None:
                self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
                self._open()
            self._f.write(line)
            self._size += len(line)
        except OSError as exc:
            self._dropped += 1
            self._failed(exc)

    def flush(self) -> None:
        if self._f is None:
            return
        try:
            self._f.flush()
        except OSError as exc:
            self._failed(exc)
            return
        if self._failing is not None:
            self._recovered()

    def _failed(self, exc: OSError) -> None:
        """Drop what is buffered, count, warn (throttled), retry after a pause."""
        self._discard()
        now = self.clock()
        self._failing = exc
        self._retry_at = now + RETRY_AFTER_ERROR
        if self.on_error is not None:
            self.on_error(exc)
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            _warn(f"cannot write {self.path}: {exc.strerror or exc}; dropping lines until it works")

    def _recovered(self) -> None:
        _warn(f"writing {self.path} again ({self._dropped} lines dropped meanwhile)")
        self._failing = None
        self._dropped = 0
        self._warned_at = -math.inf

    def _discard(self) -> None:
        """Close the file without flushing (the buffer is what failed to be written)."""
        f, self._f = self._f, None
        if f is None:
            return
        try:
            f.close()  # NOTE: closes the fd even when the final flush fails (CPython's io)
        except OSError:
            pass

    @property
    def failing(self) -> bool:
        """True while the last write or flush failed (lines are being dropped)."""
        return self._failing is not None

    def close(self) -> None:
        """Flush and close (idempotent); the next write reopens."""
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError as exc:
                self._failed(exc)


def _to_stderr(line: str) -> None:
    """One line on stderr; a closed or broken stderr is no reason to stop either."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _warn(message: str) -> None:
    _to_stderr(f"toru supervisor warn: {message}")


class SupervisorLog:
    """The supervisor's own log: ``plugin-supervisor.log`` plus a copy on stderr."""

    def __init__(self, writer: LogWriter, echo: bool = True) -> None:
        self.writer = writer
        self.echo = echo

    def log(self, level: str, message: str, plugin: str | None = None, **fields: Any) -> None:
        entry: dict[str, Any] = {"timestamp": now_iso(), "level": level, "plugin": plugin}
        entry["message"] = message
        entry.update(fields)
        self.writer.write(entry)
        self.writer.flush()
        if self.echo and _RANK[level] >= _RANK["info"]:
            who = f"[{plugin}] " if plugin else ""
            extra = f" ({fields['error']})" if fields.get("error") else ""
            _to_stderr(f"toru supervisor {level}: {who}{message}{extra}")

    def debug(self, message: str, plugin: str | None = None, **fields: Any) -> None:
        self.log("debug", message, plugin, **fields)

    def info(self, message: str, plugin: str | None = None, **fields: Any) -> None:
        self.log("info", message, plugin, **fields)

    def warn(self, message: str, plugin: str | None = None, **fields: Any) -> None:
        self.log("warn", message, plugin, **fields)

    def error(self, message: str, plugin: str | None = None, **fields: Any) -> None:
        self.log("error", message, plugin, **fields)


# A plain stderr line that says something broke: Python's exception line, Node's
# ``Error: ...``, Rust's and Go's panics, ``fatal``/``FATAL``/``ERROR`` prefixes.
_ERROR_LINE = re.compile(
    rb"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b(?::|$)"
    rb"|(?:Uncaught )?(?:[A-Z]\w*)?Error: "
    rb"|thread '[^']*' panicked at|panic: |fatal error: |goroutine \d+ \[|"
    rb"(?:FATAL|Fatal|fatal|ERROR|CRITICAL)\b[:\s])"
)
_TRACEBACK = b"Traceback (most recent call last):"
_CHAINED = (
    b"During handling of the above exception",
    b"The above exception was the direct cause",
)


class StderrLevels:
    """The level of a plain (non-JSON) stderr line: ``error`` for crash output, else ``warn``.

    Why stateful: a Python traceback is many lines, and only its first and last look like an
    error; the indented lines between (``  File ...``) belong to it too. Node's stack lines
    (``    at ...``) after an ``Error:`` line likewise. One instance per plugin's stderr.
    """

    def __init__(self) -> None:
        self._mode = ""  # "traceback": until its exception line; "stack": while indented

    def __call__(self, text: bytes) -> str:
        if text.startswith(_TRACEBACK) or text.startswith(_CHAINED):
            self._mode = "traceback"
            return "error"
        if self._mode and text[:1] in (b" ", b"\t"):
            return "error"
        if self._mode == "traceback":
            self._mode = ""  # the exception line ends the traceback
            return "error" if text.strip() else "warn"
        self._mode = ""
        if _ERROR_LINE.match(text):
            self._mode = "stack"  # indented stack lines may follow
            return "error"
        return "warn"


def plugin_line_entry(
    plugin_id: str, raw: bytes, stream: str, stderr_levels: StderrLevels | None = None
) -> dict[str, Any]:
    """Turn one captured output line into a log entry.

    A JSON object with ``level``/``message`` keeps its level and fields (the SDK logs that
    way); anything else is wrapped: stdout as ``info``, stderr as ``warn`` or, for crash
    output (tracebacks, panics, ``Error:`` lines; ``stderr_levels`` decides), ``error``.
    """
    if len(raw) > MAX_LINE:
        raw = raw[:MAX_LINE]
    text = raw.rstrip(b"\r\n")
    if text[:1] == b"{":
        try:
            obj = loads(text)
        except Exception:
            obj = None
        if isinstance(obj, dict) and ("level" in obj or "message" in obj):
            obj["level"] = normalize_level(obj.get("level"))
            if not isinstance(obj.get("message"), str):
                obj["message"] = str(obj.get("message", ""))
            obj["plugin"] = plugin_id
            obj.setdefault("timestamp", now_iso())
            obj.setdefault("stream", stream)
            return obj
    if stream != "stderr":
        level = "info"
    elif stderr_levels is not None:
        level = stderr_levels(text)
    else:
        level = "warn"
    return {
        "timestamp": now_iso(),
        "level": level,
        "plugin": plugin_id,
        "message": text.decode("utf-8", "replace"),
        "stream": stream,
    }


# ---------------------------------------------------------------------------- reader


def _reverse_lines(path: Path, block: int = 65536) -> Iterator[bytes]:
    """Lines of a file from last to first, reading blocks from the end."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in finally
    except OSError:
        return
    try:
        f.seek(0, os.SEEK_END)
        pos = f.tell()
        rest = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step) + rest
            lines = chunk.split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if rest:
            yield rest
    finally:
        f.close()


def log_files(path: Path, backups: int) -> list[Path]:
    """Current file first, then ``.1`` .. ``.backups`` (newest to oldest)."""
    return [path] + [path.with_name(f"{path.name}.{i}") for i in range(1, backups + 1)]


def read_logs(
    path: Path,
    backups: int = 5,
    page: int = 0,
    page_size: int = 100,
    level: str | None = None,
) -> dict[str, Any]:
    """One page of entries, newest first, across rotated files, ``level`` = minimum."""
    min_rank = level_rank(level) if level else 0
    skip = page * page_size
    entries: list[dict[str, Any]] = []
    has_more = False
    for p in log_files(path, backups):
        for line in _reverse_lines(p):
            try:
                entry = loads(line)
            except Exception:
                entry = {"level": "warn", "message": line.decode("utf-8", "replace")}
            if not isinstance(entry, dict):
                continue
            if min_rank and level_rank(str(entry.get("level", "info"))) < min_rank:
                continue
            if skip:
                skip -= 1
                continue
            if len(entries) == page_size:
                has_more = True
                break
            entries.append(entry)
        if has_more:
            break
    return {"entries": entries, "page": page, "page_size": page_size, "has_more": has_more}
