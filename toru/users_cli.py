"""``toru user add|passwd|role|delete|list|token|tokens|revoke``: accounts from the shell.

Works on the database directly (no server needed); passwords are read from stdin so they
never appear in the process list or shell history.
"""

from __future__ import annotations

import getpass
import sys
from typing import Any

from .accounts import Accounts
from .config import ConfigError, load_config
from .errors import ToruError
from .store import Store


def _read_password(prompt: str) -> str:
    """A password from the terminal (asked twice) or the first line of piped stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("again: ") != first:
            raise ToruError("passwords do not match", code="mismatch", status=400)
        return first
    return sys.stdin.readline().rstrip("\r\n")


def main(args: Any) -> int:
    """Entry point (see toru/cli.py)."""
    try:
        config = load_config(getattr(args, "home", None))
    except ConfigError as exc:
        print(f"toru user: {exc}", file=sys.stderr)
        return 2
    store = Store(config.db_path)
    store.migrate()
    accounts = Accounts(store, session_ttl=config.session_ttl, login_rate=config.login_rate)
    cmd = args.user_command
    try:
        if cmd == "add":
            pw = _read_password(f"password for {args.username}: ")
            user = accounts.create_user(args.username, pw, args.role)
            print(f"created {user.role} {user.username}")
        elif cmd == "passwd":
            pw = _read_password(f"new password for {args.username}: ")
            accounts.set_password(args.username, pw)
            print(f"password of {args.username} changed; their sessions were ended")
        elif cmd == "role":
            user = accounts.set_role(args.username, args.role)
            print(f"{user.username} is now {user.role}")
        elif cmd == "delete":
            accounts.delete_user(args.username)
            print(f"deleted {args.username} with their sessions and API tokens")
        elif cmd == "tokens":
            for t in accounts.list_tokens(args.username):
                last = t["last_used_at"] or "never used"
                print(f"{t['id']}\t{t['username']}\t{t['name']}\t{t['created_at']}\t{last}")
        elif cmd == "revoke":
            accounts.delete_token(args.token_id)
            print(f"revoked API token {args.token_id}")
        elif cmd == "list":
            for u in accounts.list_users():
                print(f"{u.username}\t{u.role}\t{u.created_at}")
        elif cmd == "token":
            t = accounts.create_token(args.username, args.name)
            print(t["token"])
            print(f"(API token {t['id']} for {t['username']}; shown only now)", file=sys.stderr)
        else:  # pragma: no cover - argparse enforces the choices
            return 2
    except ToruError as exc:
        print(f"toru user {cmd}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
