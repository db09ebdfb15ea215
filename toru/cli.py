"""The ``toru`` command: one argparse tree, each command implemented in the module it names.

Handlers are imported lazily so ``toru plugin check`` or ``toru license issue`` start fast
and do not pull in gunicorn or falcon.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

# Commands that write to a home: everything they create is private (umask 077), inherited by
# the supervisor, gunicorn and its workers. Author tools (`toru plugin ...`) keep the user's.
PRIVATE_COMMANDS = frozenset({"serve", "supervisor", "plugins", "user"})


def _handler(spec: str):
    def run(args: argparse.Namespace) -> int:
        module, func = spec.split(":")
        return int(getattr(importlib.import_module(module), func)(args) or 0)

    return run


def _home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="Toru home directory (env TORU_HOME, default: current dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toru", description="Toru: a process-isolated plugin host."
    )
    parser.add_argument("--version", action="version", version=f"toru {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run everything: supervisor + gunicorn with the web app")
    _home(p)
    p.add_argument("--bind", help="HOST:PORT or unix:/path (default 127.0.0.1:8080)")
    p.add_argument("--workers", type=int, help="gunicorn asgi worker processes (default 2 x cores)")
    p.add_argument(
        "--enable-all", action="store_true", help="enable every discovered plugin at start"
    )
    p.set_defaults(func=_handler("toru.serve:main"))

    p = sub.add_parser("supervisor", help="run only the plugin supervisor (split mode)")
    _home(p)
    p.set_defaults(func=_handler("toru.supervisor.main:main"))

    p = sub.add_parser(
        "plugins", help="list, enable, disable, restart, install, approve or rescan plugins"
    )
    _home(p)
    psub = p.add_subparsers(dest="plugins_command", metavar="ACTION")
    actions: list[argparse.ArgumentParser] = []

    def action(name: str, summary: str, *args: str) -> argparse.ArgumentParser:
        a = psub.add_parser(name, help=summary)
        for arg in args:
            a.add_argument(arg)
        actions.append(a)
        return a

    action("list", "list installed plugins (default)")
    for name in ("enable", "disable"):
        action(name, f"{name} a plugin (works with or without a server)", "plugin_id")
    action(
        "restart",
        "restart a plugin without losing a request: the new process starts beside the old one,"
        " takes over once healthy, the old one finishes (needs a running server)",
        "plugin_id",
    )
    action("rescan", "ask the running supervisor to rescan the plugin directory")
    action(
        "approve",
        "run a plugin whose binary changed (state changed) and pin its new SHA-256",
        "plugin_id",
    )
    a = action(
        "install",
        "check a plugin binary, copy it atomically into plugins/ and pin its SHA-256"
        " (a running plugin is upgraded); works with or without a server",
    )
    a.add_argument("path", help="the plugin executable to install")
    a.add_argument(
        "--enable", action="store_true", help="enable it too (new plugins start disabled)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for a in actions:  # `toru plugins list --json` as well as `toru plugins --json list`
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
        a.add_argument("--home", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(func=_handler("toru.plugins_cli:main"))

    p = sub.add_parser("user", help="manage users")
    _home(p)
    usub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    a = usub.add_parser("add", help="add a user; the password is read from stdin")
    a.add_argument("username")
    a.add_argument("--role", choices=("admin", "user"), default="user")
    a = usub.add_parser("passwd", help="set a user's password, read from stdin")
    a.add_argument("username")
    a = usub.add_parser("role", help="change a user's role (the last admin stays admin)")
    a.add_argument("username")
    a.add_argument("role", choices=("admin", "user"))
    a = usub.add_parser("delete", help="delete a user with their sessions and API tokens")
    a.add_argument("username")
    usub.add_parser("list", help="list users")
    a = usub.add_parser("token", help="create an API token for a user (printed once)")
    a.add_argument("username")
    a.add_argument("--name", default="cli")
    a = usub.add_parser("tokens", help="list API tokens (ids, owners, last use; never secrets)")
    a.add_argument("username", nargs="?", help="only this user's tokens")
    a = usub.add_parser("revoke", help="revoke an API token by its id (see tokens)")
    a.add_argument("token_id")
    p.set_defaults(func=_handler("toru.users_cli:main"))

    p = sub.add_parser("doctor", help="check a home and this host; print what to fix")
    _home(p)
    p.add_argument("--nginx", metavar="SITE", help="also check this nginx site's upstream")
    p.add_argument("--min-free", default="256M", help="free disk space wanted (default 256M)")
    p.set_defaults(func=_handler("toru.doctor:main"))

    p = sub.add_parser("plugin", help="plugin author tools")
    psub = p.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    a = psub.add_parser("check", help="run the protocol conformance checker on an executable")
    a.add_argument("path")
    a.add_argument("--verbose", "-v", action="store_true")
    a.set_defaults(func=_handler("toru_plugin_api.check:cli"))
    a = psub.add_parser("new", help="create a plugin directory that passes the checker as made")
    a.add_argument("name", help="the plugin id, e.g. disk-usage")
    a.add_argument("--lang", choices=("python", "node", "rust"), default="python")
    a.add_argument("--dir", help="directory to create (default: ./NAME)")
    a.set_defaults(func=_handler("toru.scaffold:cli"))
    a = psub.add_parser("dev", help="rebuild, install and restart a plugin on every change")
    a.add_argument("path", help="the plugin's source directory (with its build script)")
    a.add_argument("--home", help="dev home (default: PATH/.toru-dev)")
    a.add_argument("--bind", default="127.0.0.1:8080", help="HOST:PORT of the dev server")
    a.add_argument("--interval", type=float, default=0.5, help="seconds between source scans")
    a.set_defaults(func=_handler("toru.plugin_dev:cli"))

    p = sub.add_parser("license", help="license keys")
    lsub = p.add_subparsers(dest="license_command", metavar="ACTION", required=True)
    a = lsub.add_parser("issue", help="issue a key; secret from TORU_LICENSE_SECRET or stdin")
    a.add_argument("--instance", required=True)
    a.add_argument("--expiry", required=True, help="'never' or an ISO date (YYYY-MM-DD)")
    a = lsub.add_parser("verify", help="verify a key; secret from TORU_LICENSE_SECRET or stdin")
    a.add_argument("key")
    a.add_argument("--instance")
    p.set_defaults(func=_handler("toru_plugin_api.license:cli"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .errors import StoreUnavailable
    from .home_modes import set_private_umask

    if args.command in PRIVATE_COMMANDS:
        set_private_umask()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except StoreUnavailable as exc:  # a garbage or damaged var/toru.db: one line, no traceback
        print(f"toru: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
