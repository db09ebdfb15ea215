"""Installing a plugin binary: validate, stage beside the target, pin, rename.

One path for ``toru plugins install PATH`` (online: the supervisor's ``install`` control op;
offline: the CLI itself), ``POST /api/plugins/install`` (the worker streams the upload to a
staged file, the supervisor finishes it) and ``toru plugin dev``.

Why this order: the file is copied first to a temporary name inside ``plugins/`` that
discovery ignores (a leading dot, no ``.binary`` suffix), hashed while it is copied, fsynced
and made 0755; its ``--metadata`` then runs (as the plugin identity, like discovery) and is
judged by the checker's static check (``toru_plugin_api/check.py``: JSON, id, route, schema),
so what was checked, what is pinned and what is renamed into place are the same bytes. The rename onto
``plugins/<id>.binary`` is atomic and never writes a running executable in place (no
``ETXTBSY``; the old process keeps its inode).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from toru.errors import BadRequest, Conflict
from toru_plugin_api.codec import ProtocolError
from toru_plugin_api.messages import PluginMetadata

from .discovery import MetadataUnavailable, read_metadata
from .identity import Identity
from .pins import CHUNK

STAGE_PREFIX = ".install-"
STAGE_SUFFIX = ".tmp"


@dataclass
class Prepared:
    """A staged, checked copy waiting to be renamed into place."""

    staged: Path
    sha256: str
    metadata: PluginMetadata

    @property
    def target_name(self) -> str:
        return f"{self.metadata.id}.binary"

    def discard(self) -> None:
        self.staged.unlink(missing_ok=True)


def new_stage(plugins_dir: Path) -> tuple[int, Path]:
    """An open fd and path for a staged file in ``plugins_dir`` (created 0600)."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=STAGE_PREFIX, suffix=STAGE_SUFFIX, dir=plugins_dir)
    return fd, Path(name)


def is_stage(path: Path, plugins_dir: Path) -> bool:
    """Whether ``path`` is a staged upload in ``plugins_dir`` (what the ``install`` op may
    move when the worker asks it to finish an upload; nothing else)."""
    return (
        path.parent == plugins_dir
        and path.name.startswith(STAGE_PREFIX)
        and path.name.endswith(STAGE_SUFFIX)
    )


def sweep_stages(plugins_dir: Path, max_age: float, now: float) -> list[str]:
    """Delete staged files older than ``max_age`` seconds (an upload whose worker died, an
    install killed mid-copy); the names deleted. A fresh one may be an upload under way."""
    gone = []
    try:
        entries = list(os.scandir(plugins_dir))
    except OSError:
        return gone
    for e in entries:
        if not is_stage(Path(e.path), plugins_dir):
            continue
        try:
            if now - e.stat(follow_symlinks=False).st_mtime > max_age:
                os.unlink(e.path)
                gone.append(e.name)
        except OSError:
            continue
    return gone


def stage_copy(src: Path, plugins_dir: Path) -> tuple[Path, str]:
    """Copy ``src`` to a new stage in ``plugins_dir``, hashing it on the way; fsynced, 0755.
    The stage and its SHA-256."""
    fd, staged = new_stage(plugins_dir)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as dst, open(src, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(staged, 0o755)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged, h.hexdigest()


def place(staged: Path, target: Path) -> None:
    """Rename ``staged`` onto ``target`` (atomic; a running old binary keeps its inode) and
    fsync the directory, so the new name survives a crash."""
    os.replace(staged, target)
    dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _seal(staged: Path) -> str:
    """fsync an uploaded stage and hash it (the worker already wrote it)."""
    h = hashlib.sha256()
    with open(staged, "rb+") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
        os.fsync(f.fileno())
    return h.hexdigest()


def _stage(src: Path, plugins_dir: Path, uploaded: bool) -> tuple[Path, str]:
    if uploaded:
        staged, digest = src, _seal(src)
        os.chmod(staged, 0o755)
        return staged, digest
    if not src.is_file():
        raise BadRequest(f"{src} is not a file", code="bad_binary")
    if not os.access(src, os.X_OK):
        raise BadRequest(f"{src} is not executable (chmod +x it)", code="bad_binary")
    return stage_copy(src, plugins_dir)


async def prepare(
    src: Path,
    plugins_dir: Path,
    *,
    uploaded: bool,
    timeout: float,
    identity: Identity | None = None,
) -> Prepared:
    """Stage ``src`` (in a thread) and check the staged copy.

    ``uploaded``: ``src`` is already a stage in ``plugins_dir`` (an API upload); it is used
    in place. ``--metadata`` runs as ``identity`` (plugin code never runs with Toru's rights,
    as in discovery) and what it prints is judged by the checker's own static check
    (``toru_plugin_api.check.metadata_from_stdout``: JSON, id, route, schema). Raises
    ``BadRequest`` (what is wrong, in the checker's words) or ``OSError``; the stage is gone
    afterwards unless a ``Prepared`` is returned.
    """
    from toru_plugin_api.check import metadata_from_stdout

    staged, digest = await asyncio.to_thread(_stage, src, plugins_dir, uploaded)
    try:
        meta = await read_metadata(staged, timeout, identity, parse=metadata_from_stdout)
    except (ProtocolError, MetadataUnavailable) as exc:
        staged.unlink(missing_ok=True)
        raise BadRequest(f"not a valid plugin: {exc}", code="bad_binary") from None
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return Prepared(staged, digest, meta)


def check_clash(
    prepared: Prepared, ids: Mapping[str, str], routes: Mapping[str, tuple[str, str]]
) -> None:
    """Refuse an id already served by a differently named binary, or a route of another id.

    ``ids``: plugin id -> binary file name; ``routes``: route -> (plugin id, binary name).
    """
    meta = prepared.metadata
    owner = ids.get(meta.id)
    if owner is not None and owner != prepared.target_name:
        raise Conflict(
            f"plugin id {meta.id!r} is already provided by {owner}; an install writes"
            f" {prepared.target_name}: remove {owner} first",
            code="id_clash",
        )
    taken = routes.get(meta.route)
    if taken is not None and taken[0] != meta.id:
        raise Conflict(
            f"route {meta.route!r} is already served by plugin {taken[0]} ({taken[1]})",
            code="route_clash",
        )


class InstallPins(Protocol):
    """Where an install records its pin (``PinGate`` online, ``PinStore`` offline)."""

    def pin_installed(self, plugin_id: str, sha256: str, binary: str) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...
    def restore(self, snapshot: dict[str, Any]) -> None: ...


def commit(prepared: Prepared, plugins_dir: Path, pins: InstallPins | None) -> dict[str, Any]:
    """Pin the staged bytes' hash, then rename them onto ``plugins/<id>.binary`` (atomic).

    The pin comes first, so the supervisor never sees the new file without it; if the rename
    fails the pins are put back, so the old binary still matches. ``pins`` is ``None`` when
    pinning is off.
    """
    target = plugins_dir / prepared.target_name
    replaced = target.exists()
    before = pins.snapshot() if pins is not None else None
    if pins is not None:
        pins.pin_installed(prepared.metadata.id, prepared.sha256, target.name)
    try:
        place(prepared.staged, target)
    except OSError:
        if pins is not None and before is not None:
            pins.restore(before)
        raise
    return {
        "id": prepared.metadata.id,
        "version": prepared.metadata.version,
        "binary": target.name,
        "sha256": prepared.sha256,
        "replaced": replaced,
    }
