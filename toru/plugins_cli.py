"""``toru plugins [list|enable ID|disable ID|restart ID|approve ID|install PATH|rescan] [--json]``.

With a running supervisor everything goes through its control socket (so the change takes
effect at once). Without one, ``enable``/``disable`` edit ``plugins/.metadata/config.json``
directly - a fresh home has no metadata yet, so the id is taken as given - and ``list``
reads each binary's ``--metadata`` itself. Offline, ``enable`` and ``approve`` write the
binary's pin (``var/binary-pins.json``, supervisor/pins.py) and ``install`` runs the same
install steps as the supervisor (supervisor/install.py); ``restart`` and ``rescan`` need
the supervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from toru.config import Config, ConfigError, load_config
from toru.errors import Conflict, NotFound, SupervisorUnavailable, ToruError

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def main(args: argparse.Namespace) -> int:
    """Entry point; returns the exit code (0 ok, 1 operation failed, 2 bad usage)."""
    try:
        config = load_config(getattr(args, "home", None))
    except ConfigError as exc:
        print(f"toru plugins: {exc}", file=sys.stderr)
        return 2
    action = getattr(args, "plugins_command", None) or "list"
    plugin_id = getattr(args, "plugin_id", None)
    as_json = bool(getattr(args, "json", False))
    if plugin_id is not None and not ID_RE.match(plugin_id):
        print(f"toru plugins: {plugin_id!r} is not a valid plugin id", file=sys.stderr)
        return 2
    try:
        try:
            result = _online(config, action, plugin_id, args)
            online = True
        except SupervisorUnavailable:
            result, online = _offline(config, action, plugin_id, args), False
    except ToruError as exc:
        print(f"toru plugins {action}: {exc.message}", file=sys.stderr)
        return 1
    if result is None:
        return 1
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print(action, result, online)
    return 0


def _source(args: argparse.Namespace) -> str:
    return os.path.abspath(args.path)


def _online(config: Config, action: str, plugin_id: str | None, args: argparse.Namespace) -> Any:
    from toru.supervisor.client import ControlClient, restart_timeout

    if not config.control_socket.exists():
        raise SupervisorUnavailable("no control socket")
    # an install checks --metadata and restarts the plugin: allow for both
    timeout = 30.0 + 2 * config.metadata_timeout + config.start_timeout
    client = ControlClient(config.control_socket, connect_timeout=1.0, timeout=timeout)
    try:
        if action == "list":
            return client.call("list")
        if action == "restart":
            return client.call(action, {"plugin": plugin_id}, timeout=restart_timeout(config))
        if action in ("enable", "disable", "approve"):
            return client.call(action, {"plugin": plugin_id})
        if action == "install":
            return client.call("install", {"path": _source(args), "enable": bool(args.enable)})
        return client.call("rescan")
    finally:
        client.close()


def _offline(config: Config, action: str, plugin_id: str | None, args: argparse.Namespace) -> Any:
    from toru.supervisor.plugin_state_file import load_state, set_enabled

    if action == "install":
        return _install_offline(config, Path(_source(args)), bool(args.enable))
    if action == "approve":
        assert plugin_id is not None
        return _approve_offline(config, plugin_id)
    if action in ("enable", "disable"):
        assert plugin_id is not None
        if action == "enable" and config.pin_binaries:
            _pin_offline(config, plugin_id)
        set_enabled(config.state_file, plugin_id, action == "enable", disabled_reason=None)
        return {"id": plugin_id, "enabled": action == "enable", "state": "stopped"}
    if action in ("rescan", "restart"):
        print(
            f"toru plugins {action}: no supervisor is running for this home"
            f" ({config.home}); start it with `toru serve` (or `toru supervisor`)",
            file=sys.stderr,
        )
        return None
    state = load_state(config.state_file)
    out = []
    binaries = sorted(config.plugins_dir.glob("*.binary")) if config.plugins_dir.is_dir() else []
    for b in binaries:
        out.append(_held_offline(config, b, state) or _describe_offline(b, state))
    return out


def _binary_of(config: Config, plugin_id: str) -> Path | None:
    """Which file holds ``plugin_id``: its pin, the supervisor's memory, or ``<id>.binary``."""
    from toru.supervisor.pins import PinStore
    from toru.supervisor.supervisor_state import SupervisorState

    pin = PinStore(config.pins_file).get(plugin_id)
    candidates = [config.plugins_dir / pin.binary] if pin else []
    for path, entry in SupervisorState(config.supervisor_state_file).metadata.items():
        if (entry.get("metadata") or {}).get("id") == plugin_id:
            candidates.append(Path(path))
    candidates.append(config.plugins_dir / f"{plugin_id}.binary")
    return next((c for c in candidates if c.is_file()), None)


def _pin_offline(config: Config, plugin_id: str) -> None:
    """``enable`` without a server pins the binary, or refuses one that changed since."""
    from toru.supervisor.pins import PinStore, sha256_file

    binary = _binary_of(config, plugin_id)
    pins = PinStore(config.pins_file)
    if binary is None:  # not installed yet: pinned by the supervisor when it first sees it
        if pins.get(plugin_id) is None:
            pins.set(plugin_id, "", "", "enable")
        return
    change = pins.check(plugin_id, sha256_file(binary), binary.name)
    if change is None:
        return
    if change.pinned is not None:
        raise Conflict(
            f"{binary.name} changed since it was approved (pinned {change.pinned}, found"
            f" {change.found}): review it, then `toru plugins approve {plugin_id}`",
            code="binary_changed",
        )
    pins.set(plugin_id, change.found, binary.name, "enable")


def _approve_offline(config: Config, plugin_id: str) -> dict[str, Any]:
    from toru.supervisor.pins import PinStore, sha256_file

    binary = _binary_of(config, plugin_id)
    if binary is None:
        raise NotFound(f"no binary found for plugin {plugin_id}")
    pins = PinStore(config.pins_file)
    old = pins.get(plugin_id)
    pin = pins.set(plugin_id, sha256_file(binary), binary.name, "approve")
    return {
        "id": plugin_id,
        "binary": binary.name,
        "old_sha256": old.sha256 if old else None,
        "sha256": pin.sha256,
    }


def _install_offline(config: Config, src: Path, enable: bool) -> dict[str, Any]:
    from toru.supervisor.install import check_clash, commit, prepare
    from toru.supervisor.pins import PinStore
    from toru.supervisor.plugin_state_file import set_enabled
    from toru.supervisor.supervisor_state import SupervisorState

    # NOTE: without a supervisor, --metadata runs as whoever runs this command (as the
    # offline `list` does); the supervisor runs it as the plugin user.
    prepared = asyncio.run(
        prepare(src, config.plugins_dir, uploaded=False, timeout=config.metadata_timeout)
    )
    try:
        ids: dict[str, str] = {}
        routes: dict[str, tuple[str, str]] = {}
        for path, entry in SupervisorState(config.supervisor_state_file).metadata.items():
            meta, name = entry.get("metadata") or {}, Path(path).name
            if (config.plugins_dir / name).is_file() and isinstance(meta.get("id"), str):
                ids[meta["id"]] = name
                routes[str(meta.get("route"))] = (meta["id"], name)
        check_clash(prepared, ids, routes)
        pins = PinStore(config.pins_file) if config.pin_binaries else None
        result = commit(prepared, config.plugins_dir, pins)
    finally:
        prepared.discard()
    if enable:
        set_enabled(config.state_file, result["id"], True, disabled_reason=None)
    result["enabled"] = enable
    return result


def _held_offline(config: Config, binary: Path, state: dict[str, Any]) -> dict[str, Any] | None:
    """A pinned binary that no longer matches its pin: listed ``changed``, never run (not
    even ``--metadata``)."""
    from toru.supervisor.pins import PinStore, sha256_file

    owner = PinStore(config.pins_file).by_binary(binary.name) if config.pin_binaries else None
    if owner is None:
        return None
    plugin_id, pin = owner
    found = sha256_file(binary)
    if found == pin.sha256:
        return None
    change = {"pinned_sha256": pin.sha256, "found_sha256": found, "binary": binary.name}
    return {
        "id": plugin_id,
        "binary": binary.name,
        "enabled": bool(state.get(plugin_id, {}).get("enabled")),
        "state": "changed",
        "binary_change": change,
        "error": f"binary changed since it was approved: `toru plugins approve {plugin_id}`",
    }


def _describe_offline(binary: Any, state: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from toru_plugin_api.messages import PluginMetadata, ProtocolError

    entry: dict[str, Any] = {"id": binary.name[: -len(".binary")], "binary": binary.name}
    try:
        proc = subprocess.run(
            [str(binary), "--metadata"], capture_output=True, timeout=5, check=False
        )
        meta = PluginMetadata.from_json(json.loads(proc.stdout))
    except (OSError, subprocess.TimeoutExpired, ValueError, ProtocolError) as exc:
        entry.update(state="invalid", enabled=False, error=str(exc) or type(exc).__name__)
        return entry
    entry.update(meta.to_json())
    entry["enabled"] = bool(state.get(meta.id, {}).get("enabled"))
    entry["state"] = "stopped"
    return entry


def _print(action: str, result: Any, online: bool) -> None:
    if action == "install":
        what = "upgraded" if result["replaced"] else "installed"
        where = "" if online else " (no supervisor running: it starts with the server)"
        state = (result.get("plugin") or {}).get(
            "state", "enabled" if result.get("enabled") else "disabled"
        )
        print(f"{result['id']} {result['version']}: {what} as {result['binary']}, {state}{where}")
        print(f"  sha256 {result['sha256']}")
        return
    if action == "approve":
        where = "" if online else " (no supervisor running: it runs at the next start)"
        print(f"{result['id']}: approved{where}; state {result.get('state', 'stopped')}")
        return
    if action == "rescan":
        print(
            f"rescanned: {len(result['added'])} added, {len(result['removed'])} removed, "
            f"{result['total']} total"
        )
        return
    if action == "restart":
        print(f"{result['id']}: restarted (pid {result.get('pid')}, {result.get('state')})")
        return
    if action in ("enable", "disable"):
        where = "" if online else " (no supervisor running: saved for its next start)"
        print(f"{result['id']}: {'enabled' if result['enabled'] else 'disabled'}{where}")
        return
    if not result:
        print("no plugins installed")
        return
    if not online:
        print("(no supervisor running: states are as on disk)")
    print(f"{'ID':24} {'ROUTE':16} {'ENABLED':8} {'STATE':9} {'PID':>7}  VERSION")
    for p in result:
        pid = p.get("pid") or ""
        print(
            f"{p['id']:24} {p.get('route') or '-':16} {'yes' if p.get('enabled') else 'no':8} "
            f"{p.get('state', '?'):9} {pid!s:>7}  {p.get('version') or ''}"
            + (f"  ({p['error']})" if p.get("error") else "")
            + (
                f"  (new binary not running: {p['upgrade_error']})"
                if p.get("upgrade_error")
                else ""
            )
            + (
                f"  (binary changed, not approved: found sha256 {p['binary_change']['found_sha256']};"
                f" toru plugins approve {p['id']})"
                if p.get("binary_change") and not p.get("error")
                else ""
            )
        )
