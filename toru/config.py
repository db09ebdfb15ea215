"""Settings, declared once: name, env var, toml key, default, parser, help.

The same table feeds the loader (precedence flag > env > toru.toml > default), the CLI's
``--help`` texts and docs/operations.md. ``Config`` is frozen; derived paths are properties.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def _floats(v: Any) -> tuple[float, ...]:
    items = v if isinstance(v, (list, tuple)) else str(v).split(",")
    out = tuple(float(x) for x in items if str(x).strip() != "")
    if not out or any(x < 0 for x in out):
        raise ValueError(f"expected a comma list of non-negative seconds: {v!r}")
    return out


def _strs(v: Any) -> tuple[str, ...]:
    items = v if isinstance(v, (list, tuple)) else str(v).split(",")
    return tuple(str(x).strip() for x in items if str(x).strip())


def _proxies(v: Any) -> tuple[str, ...]:
    """Peer addresses whose forwarding headers are believed: IPs, or ``unix`` for a
    Unix-socket peer; ``none`` (or an empty list) trusts nobody."""
    items = _strs(v)
    if items == ("none",):
        return ()
    for item in items:
        if item != "unix":
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"not an IP address or 'unix': {item!r}") from None
    return items


def _pos_int(v: Any) -> int:
    n = int(v)
    if n < 1:
        raise ValueError(f"expected a positive integer: {v!r}")
    return n


def _pos_float(v: Any) -> float:
    n = float(v)
    if n <= 0:
        raise ValueError(f"expected a positive number: {v!r}")
    return n


def _isolation(v: Any) -> str:
    s = str(v).strip().lower()
    if s not in ("shared", "per-plugin"):
        raise ValueError(f"expected 'shared' or 'per-plugin': {v!r}")
    return s


def _uid_range(v: Any) -> tuple[int, int]:
    """``"70000-79999"`` (or a two-item list) -> ``(70000, 79999)``: ids above 0, first <= last."""
    items = list(v) if isinstance(v, (list, tuple)) else str(v).replace(",", "-").split("-")
    if len(items) != 2:
        raise ValueError(f"expected FIRST-LAST: {v!r}")
    first, last = int(items[0]), int(items[1])
    if not 0 < first <= last < 2**32 - 1:
        raise ValueError(f"expected 0 < FIRST <= LAST < 4294967295: {v!r}")
    return first, last


def _default_workers() -> int:
    """Two event-loop workers per core (measured: docs/operations.md, "Workers")."""
    return 2 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    toml: str
    default: Any
    parse: Callable[[Any], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("bind", "TORU_BIND", "bind", "127.0.0.1:8080", str, "HOST:PORT or unix:/path"),
    Setting(
        "workers", "TORU_WORKERS", "workers", None, _pos_int, "gunicorn asgi workers (2 x cores)"
    ),
    Setting("plugins_dir", "TORU_PLUGINS_DIR", "plugins_dir", None, str, "plugin directory"),
    Setting("log_dir", "TORU_LOG_DIR", "log_dir", None, str, "log directory"),
    Setting(
        "http_timeout",
        "TORU_HTTP_TIMEOUT",
        "supervisor.http_timeout",
        30.0,
        _pos_float,
        "seconds a plugin has to answer an http request (then 504)",
    ),
    Setting(
        "kv_timeout",
        "TORU_KV_TIMEOUT",
        "supervisor.kv_timeout",
        5.0,
        _pos_float,
        "seconds a plugin has to answer a kv request",
    ),
    Setting(
        "restart_backoff",
        "TORU_RESTART_BACKOFF",
        "supervisor.restart_backoff",
        (1.0, 2.0, 4.0, 8.0, 16.0),
        _floats,
        "restart delays after consecutive crashes",
    ),
    Setting(
        "max_failures",
        "TORU_MAX_FAILURES",
        "supervisor.max_failures",
        10,
        _pos_int,
        "consecutive failures before a plugin is disabled",
    ),
    Setting(
        "shutdown_grace",
        "TORU_SHUTDOWN_GRACE",
        "supervisor.shutdown_grace",
        5.0,
        _pos_float,
        "seconds between shutdown/SIGTERM and SIGKILL",
    ),
    Setting(
        "health_interval",
        "TORU_HEALTH_INTERVAL",
        "supervisor.health_interval",
        5.0,
        _pos_float,
        "seconds between health probes of a running plugin",
    ),
    Setting(
        "health_timeout",
        "TORU_HEALTH_TIMEOUT",
        "supervisor.health_timeout",
        10.0,
        _pos_float,
        "seconds an idle plugin's probe, or a busy one's silence past a deadline, may last",
    ),
    Setting(
        "rescan_interval",
        "TORU_RESCAN_INTERVAL",
        "supervisor.rescan_interval",
        5.0,
        _pos_float,
        "seconds between cheap checks of the plugin directory",
    ),
    Setting(
        "start_timeout",
        "TORU_START_TIMEOUT",
        "supervisor.start_timeout",
        5.0,
        _pos_float,
        "seconds a spawned plugin has to create its socket",
    ),
    Setting(
        "metadata_timeout",
        "TORU_METADATA_TIMEOUT",
        "supervisor.metadata_timeout",
        5.0,
        _pos_float,
        "seconds `<binary> --metadata` may take (a timeout is retried)",
    ),
    Setting(
        "max_frame",
        "TORU_MAX_FRAME",
        "supervisor.max_frame",
        16 * 1024 * 1024,
        _pos_int,
        "maximum protocol frame size in bytes",
    ),
    Setting(
        "cgroups",
        "TORU_CGROUPS",
        "supervisor.cgroups",
        True,
        _bool,
        "run each plugin in its own cgroup v2 where the machine allows it (false: process "
        "groups only)",
    ),
    Setting(
        "plugins_user",
        "TORU_PLUGINS_USER",
        "plugins.user",
        None,
        str,
        "user name or uid plugins run as (default: toru-plugin when Toru runs as root, "
        "else Toru's own user)",
    ),
    Setting(
        "plugins_group",
        "TORU_PLUGINS_GROUP",
        "plugins.group",
        None,
        str,
        "group name or gid plugins run as (default: the plugin user's primary group)",
    ),
    Setting(
        "plugins_isolation",
        "TORU_PLUGINS_ISOLATION",
        "plugins.isolation",
        "shared",
        _isolation,
        "'shared': every plugin runs as plugins.user; 'per-plugin': each plugin gets its own "
        "uid from plugins.uid_range (needs root)",
    ),
    Setting(
        "plugins_uid_range",
        "TORU_PLUGINS_UID_RANGE",
        "plugins.uid_range",
        (70000, 79999),
        _uid_range,
        "uids (and equal gids) handed out with plugins.isolation = 'per-plugin', 'FIRST-LAST'",
    ),
    Setting(
        "log_max_bytes",
        "TORU_LOG_MAX_BYTES",
        "logs.max_bytes",
        10 * 1024 * 1024,
        _pos_int,
        "rotate a log file at this size",
    ),
    Setting("log_backups", "TORU_LOG_BACKUPS", "logs.backups", 5, _pos_int, "rotated files kept"),
    Setting(
        "metrics_public",
        "TORU_METRICS_PUBLIC",
        "metrics.public",
        False,
        _bool,
        "serve /metrics without auth to any client",
    ),
    Setting(
        "body_limit",
        "TORU_BODY_LIMIT",
        "http.body_limit",
        10 * 1024 * 1024,
        _pos_int,
        "largest request body accepted (413 beyond)",
    ),
    Setting(
        "trusted_proxies",
        "TORU_TRUSTED_PROXIES",
        "http.trusted_proxies",
        None,  # load_config: ("unix",) when bind is a Unix socket, else nobody
        _proxies,
        "peers whose X-Forwarded-* headers are believed: IP addresses, 'unix' (a Unix-socket"
        " peer) or 'none'; default 'unix' when bind is unix:/path, else none",
    ),
    Setting(
        "client_timeout",
        "TORU_CLIENT_TIMEOUT",
        "http.client_timeout",
        15.0,
        _pos_float,
        "seconds a client has to send its request headers, and its whole body; a slower "
        "connection is closed (408 for a body)",
    ),
    Setting(
        "pin_binaries",
        "TORU_PIN_BINARIES",
        "plugins.pin_binaries",
        True,
        _bool,
        "run a plugin binary only if its SHA-256 is the one an admin approved (enable, "
        "approve, install); false for development only",
    ),
    Setting(
        "install_max_bytes",
        "TORU_INSTALL_MAX_BYTES",
        "plugins.install_max_bytes",
        256 * 1024 * 1024,
        _pos_int,
        "largest plugin binary POST /api/plugins/install accepts (413 beyond)",
    ),
    Setting(
        "session_ttl",
        "TORU_SESSION_TTL",
        "auth.session_ttl",
        12 * 3600.0,
        _pos_float,
        "session lifetime in seconds",
    ),
    Setting(
        "login_rate",
        "TORU_LOGIN_RATE",
        "auth.login_rate",
        10,
        _pos_int,
        "failed logins per client or user per 5 minutes before 429",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}

# ---------------------------------------------------------------------------- plugin limits

# `[plugins.<id>.limits]` key -> the cgroup v2 controller whose file (`memory.max`, ...) it sets.
LIMIT_CONTROLLERS = {"memory_max": "memory", "pids_max": "pids", "cpu_max": "cpu"}
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
CPU_PERIOD_US = 100_000


def _memory_max(v: Any) -> str:
    """Bytes (int), ``"256M"``-style (K/M/G/T, powers of 1024) or ``"max"`` -> memory.max."""
    if isinstance(v, str) and v.strip().lower() == "max":
        return "max"
    if isinstance(v, bool):
        raise ValueError(f"not a size: {v!r}")
    if isinstance(v, int):
        n = v
    else:
        text = str(v).strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in _UNITS and not text[-1:].isdigit() else ""
        n = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    if n < 1024 * 1024:
        raise ValueError(f"under 1 MiB, the plugin could not even start: {v!r}")
    return str(n)


def _pids_max(v: Any) -> str:
    if isinstance(v, str) and v.strip().lower() == "max":
        return "max"
    if isinstance(v, bool) or int(v) < 1:
        raise ValueError(f"expected a positive number of processes or 'max': {v!r}")
    return str(int(v))


def _cpu_max(v: Any) -> str:
    """A number of CPUs (``0.5``) or ``"max"`` -> cpu.max ``"<quota> <period>"`` (µs)."""
    if isinstance(v, str) and v.strip().lower() == "max":
        return "max"
    if isinstance(v, bool) or float(v) <= 0:
        raise ValueError(f"expected a positive number of CPUs or 'max': {v!r}")
    return f"{max(1000, round(float(v) * CPU_PERIOD_US))} {CPU_PERIOD_US}"


_LIMIT_PARSERS: dict[str, Callable[[Any], str]] = {
    "memory_max": _memory_max,
    "pids_max": _pids_max,
    "cpu_max": _cpu_max,
}


@dataclass(frozen=True)
class PluginLimits:
    """One plugin's ``[plugins.<id>.limits]``: the exact strings for the cgroup files."""

    memory_max: str | None = None
    pids_max: str | None = None
    cpu_max: str | None = None

    def items(self) -> list[tuple[str, str]]:
        """The configured limits as ``(name, value)``."""
        return [(n, getattr(self, n)) for n in LIMIT_CONTROLLERS if getattr(self, n) is not None]

    def controllers(self) -> set[str]:
        return {LIMIT_CONTROLLERS[n] for n, _ in self.items()}


def _plugin_limits(data: dict[str, Any]) -> tuple[tuple[str, PluginLimits], ...]:
    """Every ``[plugins.<id>.limits]`` table of toru.toml, checked."""
    plugins = data.get("plugins")
    if not isinstance(plugins, dict):
        return ()
    out = []
    for plugin_id, table in sorted(plugins.items()):
        limits = table.get("limits") if isinstance(table, dict) else None
        if limits is None:
            continue
        where = f"toru.toml plugins.{plugin_id}.limits"
        if not isinstance(limits, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(limits) - set(_LIMIT_PARSERS)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        values = {}
        for key, raw in limits.items():
            try:
                values[key] = _LIMIT_PARSERS[key](raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"bad value for {where}.{key}: {exc}") from None
        out.append((str(plugin_id), PluginLimits(**values)))
    return tuple(out)


@dataclass(frozen=True)
class Config:
    home: Path
    bind: str
    workers: int
    plugins_dir: Path
    log_dir: Path
    http_timeout: float
    kv_timeout: float
    restart_backoff: tuple[float, ...]
    max_failures: int
    shutdown_grace: float
    health_interval: float
    health_timeout: float
    rescan_interval: float
    start_timeout: float
    metadata_timeout: float
    max_frame: int
    cgroups: bool
    plugins_user: str | None
    plugins_group: str | None
    plugins_isolation: str
    plugins_uid_range: tuple[int, int]
    log_max_bytes: int
    log_backups: int
    metrics_public: bool
    body_limit: int
    trusted_proxies: tuple[str, ...]
    client_timeout: float
    session_ttl: float
    login_rate: int
    pin_binaries: bool
    install_max_bytes: int
    # `[plugins.<id>.limits]` (toru.toml only; per plugin, so not in SETTINGS): see limits_by_plugin.
    plugin_limits: tuple[tuple[str, PluginLimits], ...] = ()

    def limits_by_plugin(self) -> dict[str, PluginLimits]:
        """Plugin id -> its configured cgroup limits."""
        return dict(self.plugin_limits)

    # Derived locations: fixed relative to home so every process agrees on them.
    @property
    def var_dir(self) -> Path:
        return self.home / "var"

    @property
    def db_path(self) -> Path:
        return self.var_dir / "toru.db"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def plugin_socket_dir(self) -> Path:
        return self.run_dir / "p"

    @property
    def plugin_identities_file(self) -> Path:
        """The per-plugin uids handed out so far (``plugins.isolation = "per-plugin"``)."""
        return self.var_dir / "plugin-uids.json"

    @property
    def metrics_dir(self) -> Path:
        return self.var_dir / "metrics"

    @property
    def plugin_log_dir(self) -> Path:
        return self.log_dir / "plugins"

    @property
    def supervisor_log(self) -> Path:
        return self.log_dir / "plugin-supervisor.log"

    @property
    def state_file(self) -> Path:
        return self.plugins_dir / ".metadata" / "config.json"

    @property
    def pins_file(self) -> Path:
        """The approved SHA-256 of each plugin's binary (supervisor/pins.py)."""
        return self.var_dir / "binary-pins.json"

    @property
    def supervisor_state_file(self) -> Path:
        """What the supervisor remembers across its restarts (supervisor_state.py)."""
        return self.var_dir / "supervisor-state.json"

    def to_env(self) -> dict[str, str]:
        """Environment that makes a child process (gunicorn, supervisor) load this config."""
        env = {"TORU_HOME": str(self.home)}
        for s in SETTINGS:
            v = getattr(self, s.name)
            if v is None:  # unset (plugins.user): the child works out the same default
                continue
            if isinstance(v, tuple):
                v = ",".join(str(x) for x in v) or "none"  # "" would mean "the default"
            elif isinstance(v, bool):
                v = "true" if v else "false"
            env[s.env] = str(v)
        return env


class ConfigError(ValueError):
    """A setting has a value that does not parse; the message names the setting and source."""


def _toml_get(data: dict[str, Any], dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def load_config(
    home: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Build the config: flag (``overrides``) > env > ``<home>/toru.toml`` > default."""
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    home_path = Path(home or env.get("TORU_HOME") or os.getcwd()).resolve()
    toml_path = home_path / "toru.toml"
    data: dict[str, Any] = {}
    if toml_path.exists():
        try:
            data = tomllib.loads(toml_path.read_text())
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"{toml_path}: {exc}") from None
    plugin_configs(data)  # a broken [plugins.<id>.config] stops `toru serve` at start
    values: dict[str, Any] = {"home": home_path}
    for s in SETTINGS:
        raw, source = None, "default"
        if s.name in overrides:
            raw, source = overrides[s.name], "flag"
        elif env.get(s.env, "") != "":
            raw, source = env[s.env], s.env
        else:
            t = _toml_get(data, s.toml)
            if t is not None:
                raw, source = t, f"toru.toml {s.toml}"
        if raw is None:
            values[s.name] = s.default
            continue
        try:
            values[s.name] = s.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad value for {s.name} (from {source}): {exc}") from None
    if values["workers"] is None:
        values["workers"] = _default_workers()
    if values["trusted_proxies"] is None:
        values["trusted_proxies"] = default_trusted_proxies(values["bind"])
    values["plugins_dir"] = _path(home_path, values["plugins_dir"], "plugins")
    values["log_dir"] = _path(home_path, values["log_dir"], "var/log")
    values["plugin_limits"] = _plugin_limits(data)
    known = {f.name for f in fields(Config)}
    return Config(**{k: v for k, v in values.items() if k in known})


def default_trusted_proxies(bind: str) -> tuple[str, ...]:
    """Whom Toru believes ``X-Forwarded-*`` from when ``http.trusted_proxies`` is not set.

    A Unix-socket bind is the shipped nginx deployment: only a process that may open the
    socket file (nginx, by the socket's mode) reaches it, so its peer is believed. A TCP bind
    believes nobody: any local process could connect and claim any address.
    """
    return ("unix",) if bind.startswith("unix:") else ()


def plugin_configs(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{plugin_id: config}`` from a parsed toru.toml's ``[plugins.<id>.config]`` tables.

    Other keys under ``[plugins]`` (settings such as ``plugins.user``) are not plugin ids and
    are left alone; a ``config`` that is not a table is an error naming the key.
    """
    section = data.get("plugins")
    if not isinstance(section, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for plugin_id, entry in section.items():
        if not isinstance(entry, dict) or "config" not in entry:
            continue
        cfg = entry["config"]
        if not isinstance(cfg, dict):
            raise ConfigError(
                f"toru.toml plugins.{plugin_id}.config must be a table "
                f"([plugins.{plugin_id}.config]), got {type(cfg).__name__}"
            )
        out[plugin_id] = cfg
    return out


def plugin_config_env(home: str | os.PathLike[str], plugin_id: str) -> dict[str, str]:
    """``{"TORU_PLUGIN_CONFIG": json}`` for a plugin about to be spawned (``{}`` when none).

    NOTE: read at each spawn, so an edit of ``[plugins.<id>.config]`` reaches the plugin at its
    next start or restart without restarting Toru. Raises ``ConfigError`` for a broken file.
    """
    path = Path(home) / "toru.toml"
    try:
        data = tomllib.loads(path.read_text()) if path.exists() else {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg = plugin_configs(data).get(plugin_id, {})
    return {"TORU_PLUGIN_CONFIG": json.dumps(cfg, default=_toml_scalar, ensure_ascii=False)}


def _toml_scalar(value: Any) -> str:
    """TOML dates and times, which JSON has no type for, travel as ISO-8601 strings."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"cannot pass {type(value).__name__} to a plugin")


def _path(home: Path, value: str | None, default: str) -> Path:
    p = Path(value) if value else Path(default)
    return p if p.is_absolute() else (home / p)


def setting(name: str) -> Setting:
    return _BY_NAME[name]
