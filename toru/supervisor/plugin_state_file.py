"""``plugins/.metadata/config.json``: which plugins are enabled, surviving restarts.

Written atomically (temp file in the same directory, fsync, rename, fsync of the directory)
so a crash mid-write leaves either the old or the new file, never half of one. The CLI edits
the same file when no supervisor runs.

A damaged file (truncated, ``[]``, ``null``, wrong types: a disk error or a hand edit) is
never read as "everything disabled" and never silently overwritten: the reader keeps a copy
as ``config.json.corrupt-<UTC time>``, recovers every entry it can still read, writes those
back, and reports a ``StateProblem`` (the supervisor logs it and shows it as a warning in
``GET /api/plugins``). A file that cannot be read at all (EACCES, EIO) raises
``StateFileUnreadable`` instead, so nothing overwrites it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toru.atomic_write import replace_file

FORMAT_VERSION = 1
MAX_WARNINGS = 5
# One `"id": {... "enabled": true|false ...}` pair, found in text that is no longer JSON.
_SALVAGE = re.compile(
    r'"([A-Za-z0-9][A-Za-z0-9.-]{0,99})"\s*:\s*\{[^{}]*?"enabled"\s*:\s*(true|false)'
)


class StateFileUnreadable(OSError):
    """config.json exists but cannot be read (permissions, I/O error): do not overwrite it."""


@dataclass(frozen=True)
class StateProblem:
    """A damaged config.json that was kept aside and repaired from what was readable."""

    file: Path
    kept_as: Path
    reason: str
    recovered: int

    def message(self) -> str:
        return (
            f"{self.file} was damaged ({self.reason}); kept it as {self.kept_as.name}, "
            f"recovered {self.recovered} plugin entr{'y' if self.recovered == 1 else 'ies'}; "
            "check which plugins should be enabled"
        )


ProblemCallback = Callable[[StateProblem], None]


def load_state(path: Path, on_problem: ProblemCallback | None = None) -> dict[str, dict[str, Any]]:
    """``{plugin_id: {"enabled": bool, ...}}``; a missing file is empty.

    Accepts the original flat form ``{"id": {"enabled": true}}`` too. A damaged file is kept
    aside and repaired (module doc); ``on_problem`` hears about it.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateFileUnreadable(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    plugins, reason = _parse(raw)
    if reason is not None:
        kept = _keep_damaged(path, raw)
        save_state(path, plugins)
        if on_problem is not None:
            on_problem(StateProblem(path, kept, reason, len(plugins)))
    return plugins


def _parse(raw: bytes) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The entries and, if anything was wrong, what (``None`` for a sound file)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        text = raw.decode("utf-8", "replace")
        found = {m.group(1): {"enabled": m.group(2) == "true"} for m in _SALVAGE.finditer(text)}
        return found, f"not valid JSON: {exc}"
    if not isinstance(data, dict):
        return {}, f"a JSON {type(data).__name__ if data is not None else 'null'}, not an object"
    plugins = data.get("plugins", data) if "version" in data else data
    if not isinstance(plugins, dict):
        return {}, f'"plugins" is a JSON {type(plugins).__name__}, not an object'
    out: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    for pid, entry in plugins.items():
        if isinstance(entry, bool):
            out[str(pid)] = {"enabled": entry}
        elif isinstance(entry, dict) and isinstance(entry.get("enabled", False), bool):
            out[str(pid)] = {**entry, "enabled": bool(entry.get("enabled", False))}
        elif isinstance(entry, dict):  # "enabled": "yes" and the like: keep it, disabled
            out[str(pid)] = {**entry, "enabled": False}
            bad.append(str(pid))
        else:
            bad.append(str(pid))
    if bad:
        return out, f"entries with wrong types: {', '.join(sorted(bad)[:10])}"
    return out, None


def _keep_damaged(path: Path, raw: bytes) -> Path:
    """Copy the damaged bytes beside the file under a name that is not taken yet."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    tmp = kept.with_name(f".{kept.name}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, kept)
    return kept


def save_state(path: Path, plugins: dict[str, dict[str, Any]]) -> None:
    """Atomically replace the file with ``plugins``."""
    body = json.dumps({"version": FORMAT_VERSION, "plugins": plugins}, indent=2, sort_keys=True)
    replace_file(path, body + "\n")


def set_enabled(
    path: Path,
    plugin_id: str,
    enabled: bool,
    on_problem: ProblemCallback | None = None,
    **extra: Any,
) -> None:
    """Read-modify-write one plugin's entry (a damaged file is repaired first, never lost)."""
    state = load_state(path, on_problem)
    entry = state.get(plugin_id, {})
    entry.update(extra)
    entry["enabled"] = enabled
    state[plugin_id] = entry
    save_state(path, state)


def kept_copies(path: Path) -> list[Path]:
    """The damaged files kept beside ``path``, newest first."""
    try:
        found = list(path.parent.glob(f"{path.name}.corrupt-*"))
    except OSError:
        return []
    return sorted(found, key=lambda p: p.name, reverse=True)


def warning_for(path: Path, kept: Path) -> dict[str, Any]:
    """The operator warning for one kept damaged copy (control op ``warnings``)."""
    return {
        "code": "plugin_state_corrupt",
        "message": (
            f"{path} was found damaged and repaired from what was readable; the damaged file "
            f"is kept as {kept.name}. Check which plugins should be enabled, then delete "
            f"{kept} to clear this warning."
        ),
        "file": str(path),
        "kept_as": str(kept),
    }


class PluginStateFile:
    """The supervisor's handle on config.json: reads, writes, and what needs an operator.

    Warnings come from the kept damaged copies on disk, so they survive a restart and the
    operator clears one by deleting the copy.
    """

    def __init__(self, path: Path, log: Any) -> None:
        self.path = path
        self.log = log  # SupervisorLog
        self._unreadable: str | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """The entries; an unreadable file is logged, warned about, and read as empty."""
        try:
            state = load_state(self.path, self._problem)
        except StateFileUnreadable as exc:
            self._set_unreadable(str(exc))
            return {}
        self._unreadable = None
        return state

    def set_enabled(self, plugin_id: str, enabled: bool, **extra: Any) -> None:
        """Raises ``OSError`` when the file cannot be read or written (caller logs it)."""
        try:
            set_enabled(self.path, plugin_id, enabled, self._problem, **extra)
        except StateFileUnreadable as exc:
            self._set_unreadable(str(exc))
            raise

    def warnings(self) -> list[dict[str, Any]]:
        out = [warning_for(self.path, kept) for kept in kept_copies(self.path)[:MAX_WARNINGS]]
        if self._unreadable is not None:
            out.append(
                {
                    "code": "plugin_state_unreadable",
                    "message": self._unreadable,
                    "file": str(self.path),
                }
            )
        return out

    def _problem(self, problem: StateProblem) -> None:
        self.log.error(problem.message(), kept_as=str(problem.kept_as))

    def _set_unreadable(self, message: str) -> None:
        if self._unreadable != message:
            self.log.error(f"{message}; not changing it (plugins keep their current state)")
        self._unreadable = message
