"""Finding plugins: ``plugins/*.binary``, their ``--metadata``, validation, duplicates.

A definite answer that is wrong (garbage, bad JSON, fields that fail validation, a
duplicate id or route, a file that is not executable) makes the plugin invalid with a reason
a human can act on. A ``--metadata`` that times out, crashes or cannot be started is
*transient* (a loaded machine, a binary being replaced): the supervisor retries it with
backoff instead. Neither ever stops the others from loading.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toru_plugin_api.codec import ProtocolError
from toru_plugin_api.messages import PluginMetadata, metadata_output_json

from .identity import Identity
from .process import PluginProcess, describe_exit

METADATA_TIMEOUT = 5.0
MAX_METADATA_BYTES = 64 * 1024
CONCURRENT_PROBES = 4  # --metadata runs at once: enough to overlap, few enough for 2 cores


# exec errors that say "not now" rather than "never" (ENOEXEC, EACCES... are definite)
_EXEC_TRANSIENT = frozenset(
    {errno.ETXTBSY, errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EINTR}
)


class MetadataUnavailable(Exception):
    """``--metadata`` gave no answer this time (timeout, crash, exec failure): retry later."""


@dataclass
class Discovered:
    """One ``*.binary`` file and what we learned about it."""

    binary: Path
    signature: tuple[int, int]  # (mtime_ns, size): re-read metadata only when it changes
    metadata: PluginMetadata | None = None
    error: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    transient: bool = False  # ``error`` is worth retrying (MetadataUnavailable)

    @property
    def id(self) -> str:
        """The plugin id, or the file name without ``.binary`` when there is no metadata."""
        return self.metadata.id if self.metadata else self.binary.name[: -len(".binary")]


def list_binaries(plugins_dir: Path) -> dict[Path, tuple[int, int]]:
    """``{path: (mtime_ns, size)}`` of every ``*.binary`` (creating the directory if missing)."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    with os.scandir(plugins_dir) as it:
        for e in it:
            if e.name.endswith(".binary") and not e.name.startswith("."):
                try:
                    st = e.stat()
                except OSError:
                    continue
                out[Path(e.path)] = (st.st_mtime_ns, st.st_size)
    return out


def directory_signature(plugins_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap fingerprint of the plugin directory for the periodic check."""
    try:
        items = list_binaries(plugins_dir)
    except OSError:
        return ()
    return tuple(sorted((p.name, m, s) for p, (m, s) in items.items()))


async def read_metadata(
    binary: Path,
    timeout: float = METADATA_TIMEOUT,
    identity: Identity | None = None,
    parse: Callable[[bytes], PluginMetadata] | None = None,
) -> PluginMetadata:
    """Run ``<binary> --metadata`` (as ``identity``: plugin code never runs with Toru's
    rights) and validate.

    ``parse`` judges the printed bytes instead of the host's own check (an install uses the
    checker's stricter ``metadata_from_stdout``). Raises ``ProtocolError`` for a definite bad
    answer, ``MetadataUnavailable`` for none.
    """
    if not os.access(binary, os.X_OK):
        raise ProtocolError("file is not executable (chmod +x it)")
    out: list[bytes] = []
    err: list[bytes] = []
    size = [0]

    def on_output(stream: str, lines: list[bytes]) -> None:
        target = out if stream == "stdout" else err
        for ln in lines:
            size[0] += len(ln)
            if size[0] <= MAX_METADATA_BYTES:
                target.append(ln)

    try:
        proc = await PluginProcess.spawn(
            [str(binary), "--metadata"],
            env=_metadata_env(),
            cwd=str(binary.parent),
            on_output=on_output,
            identity=identity,
        )
    except OSError as exc:
        why = f"cannot execute: {exc.strerror or exc}" + _as(identity, exc.errno)
        if exc.errno in _EXEC_TRANSIENT:  # e.g. the binary is still being written
            raise MetadataUnavailable(why) from None
        raise ProtocolError(why) from None
    try:
        code = await proc.wait(timeout)
    except asyncio.CancelledError:  # the supervisor is stopping: leave no probe behind
        await proc.terminate(0.0)
        raise
    if code is None:
        await proc.terminate(0.0)
        raise MetadataUnavailable(
            f"--metadata did not finish within {timeout:g} s (a slow plugin on a loaded"
            " machine: raise TORU_METADATA_TIMEOUT / supervisor.metadata_timeout)"
            + _stdout_hint(out)
        )
    await proc.drain_output(1.0)
    if code != 0:
        tail = b" | ".join(err[-3:]).decode("utf-8", "replace")
        why = ", ".join(f"{k} {v}" for k, v in describe_exit(code).items())
        hint = _as(identity, errno.EACCES) if code == 126 else ""  # the shell's "cannot exec"
        raise MetadataUnavailable(
            f"--metadata failed ({why})" + (f": {tail}" if tail else "") + hint + _stdout_hint(out)
        )
    if size[0] > MAX_METADATA_BYTES:
        raise ProtocolError("--metadata printed more than 64 KiB")
    text = b"\n".join(out)
    if parse is not None:
        return parse(text)
    # the checker's words for stdout noise ("it printed 'Starting...' before the JSON")
    return PluginMetadata.from_json(metadata_output_json(text))


def _stdout_hint(out: list[bytes]) -> str:
    """What a failed probe printed on stdout, quoted: most often a plugin that ignores
    ``--metadata`` and starts serving, or logs to stdout first."""
    text = b"\n".join(out).decode("utf-8", "replace").strip()
    if not text:
        return ""
    return (
        f"; it printed {text[:80]!r} on stdout (on --metadata a plugin prints only its"
        " metadata JSON and exits; log to stderr)"
    )


def _as(identity: Identity | None, err: int | None) -> str:
    """For a permission error under the plugin user: what that user needs."""
    if identity is None or identity.is_self or err != errno.EACCES:
        return ""
    return (
        f" (plugins run as {identity.name}: it needs to read and execute the binary and its"
        " interpreter, and to traverse every directory on the way)"
    )


def _metadata_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORU_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


async def inspect(
    binary: Path,
    signature: tuple[int, int],
    timeout: float = METADATA_TIMEOUT,
    identity: Identity | None = None,
) -> Discovered:
    """Read and validate one binary's metadata into a ``Discovered``."""
    try:
        meta = await read_metadata(binary, timeout, identity)
    except ProtocolError as exc:
        return Discovered(binary, signature, error=str(exc))
    except MetadataUnavailable as exc:
        return Discovered(binary, signature, error=str(exc), transient=True)
    return Discovered(binary, signature, metadata=meta)


async def inspect_all(
    binaries: dict[Path, tuple[int, int]],
    timeout: float = METADATA_TIMEOUT,
    limit: int = CONCURRENT_PROBES,
    identity: Identity | None = None,
) -> list[Discovered]:
    """Inspect many binaries concurrently (bounded), sorted by file name."""
    sem = asyncio.Semaphore(limit)

    async def one(p: Path, sig: tuple[int, int]) -> Discovered:
        async with sem:
            return await inspect(p, sig, timeout, identity)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(p, s)) for p, s in sorted(binaries.items())]
    return [t.result() for t in tasks]


def resolve_conflicts(
    found: list[Discovered], claimed_ids: dict[str, Path], claimed_routes: dict[str, Path]
) -> None:
    """Mark the second plugin claiming an id or route invalid, with a clear reason.

    ``claimed_*`` hold what already-loaded plugins own (they keep it); updated in place.
    """
    for d in found:
        if d.metadata is None:
            continue
        owner = claimed_ids.get(d.metadata.id)
        if owner is not None and owner != d.binary:
            d.error = f"duplicate plugin id {d.metadata.id!r}: already provided by {owner.name}"
            d.metadata = None
            continue
        owner = claimed_routes.get(d.metadata.route)
        if owner is not None and owner != d.binary:
            d.error = f"duplicate route {d.metadata.route!r}: already served by {owner.name}"
            d.extra["id"] = d.metadata.id
            d.metadata = None
            continue
        claimed_ids[d.metadata.id] = d.binary
        claimed_routes[d.metadata.route] = d.binary


@dataclass
class Discovering:
    """A binary whose ``--metadata`` has not answered yet: the first probe is under way, or
    it timed out or crashed and is retried with backoff. Listed with state ``discovering``.
    """

    binary: Path
    signature: tuple[int, int]
    enabled: bool = False  # as plugins/.metadata/config.json says, for the listing
    attempts: int = 0  # probes that gave no answer so far
    retry_at: float | None = None  # monotonic time of the next probe
    error: str | None = None

    @property
    def id(self) -> str:
        return self.binary.name[: -len(".binary")]

    def due(self, now: float) -> bool:
        return self.retry_at is not None and now >= self.retry_at

    def info(self, wall_retry_at: float | None) -> dict[str, object]:
        """``PluginInfo`` of docs/control-protocol.md, for a plugin not yet described."""
        return {
            "id": self.id,
            "name": self.binary.name,
            "version": "",
            "author": None,
            "icon": "",
            "route": None,
            "binary": self.binary.name,
            "enabled": self.enabled,
            "state": "discovering",
            "health": "unknown",
            "pid": None,
            "restarts": 0,
            "consecutive_failures": 0,
            "uptime_seconds": None,
            "error": self.error,
            "retry_at": wall_retry_at,
            "binary_change": None,
        }
