"""``toru plugins [list|enable ID|disable ID|restart ID|rescan] [--json]``.

With a running supervisor everything goes through its control socket (so the change takes
effect at once). Without one, ``enable``/``disable`` edit ``plugins/.metadata/config.json``
directly - a fresh home has no metadata yet, so the id is taken as given - and ``list``
reads each binary's ``--metadata`` itself; ``restart`` and ``rescan`` need the supervisor.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from typing import Any

from toru.config import Config, ConfigError, load_config
from toru.errors import SupervisorUnavailable, ToruError

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
        result = _online(config, action, plugin_id)
        online = True
    except SupervisorUnavailable:
        result, online = _offline(config, action, plugin_id), False
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


def _online(config: Config, action: str, plugin_id: str | None) -> Any:
    from toru.supervisor.client import ControlClient, restart_timeout

    if not config.control_socket.exists():
        raise SupervisorUnavailable("no control socket")
    client = ControlClient(config.control_socket, connect_timeout=1.0, timeout=30.0)
    try:
        if action == "list":
            return client.call("list")
        if action == "restart":
            return client.call(action, {"plugin": plugin_id}, timeout=restart_timeout(config))
        if action in ("enable", "disable"):
            return client.call(action, {"plugin": plugin_id})
        return client.call("rescan")
    finally:
        client.close()


def _offline(config: Config, action: str, plugin_id: str | None) -> Any:
    from toru.supervisor.plugin_state_file import load_state, set_enabled

    if action in ("enable", "disable"):
        assert plugin_id is not None
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
        out.append(_describe_offline(b, state))
    return out


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
        )
