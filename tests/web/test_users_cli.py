"""``toru user ...`` (add, passwd, role, delete, list, token, tokens, revoke) against a real
home (no server needed)."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import ROOT
from toru.accounts import Accounts
from toru.store import Store


def toru(home, *args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "toru.cli", "user", "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_user_cli(short_home):
    cp = toru(short_home, "add", "ops", "--role", "admin", stdin="ops-password-1\n")
    assert cp.returncode == 0, cp.stderr
    assert toru(short_home, "add", "ops", stdin="ops-password-1\n").returncode == 1  # exists
    cp = toru(short_home, "add", "weak", stdin="short\n")
    assert cp.returncode == 1 and "password" in cp.stderr
    cp = toru(short_home, "list")
    assert cp.stdout.split("\t")[:2] == ["ops", "admin"]
    assert toru(short_home, "passwd", "ops", stdin="ops-password-2\n").returncode == 0
    assert toru(short_home, "passwd", "nobody", stdin="whatever-123\n").returncode == 1
    cp = toru(short_home, "token", "ops", "--name", "ci")
    token = cp.stdout.strip()
    assert cp.returncode == 0 and token.startswith("toru_") and "shown only now" in cp.stderr

    accounts = Accounts(Store(short_home / "var" / "toru.db"))
    assert accounts.authenticate("ops", "ops-password-2").role == "admin"
    assert accounts.authenticate("ops", "ops-password-1") is None
    assert accounts.token_user(token).username == "ops"
    # nothing secret is stored in clear
    db = (short_home / "var" / "toru.db").read_bytes()
    assert token.encode() not in db and b"ops-password-2" not in db


def test_user_cli_role_tokens_revoke_delete(short_home):
    assert (
        toru(short_home, "add", "root", "--role", "admin", stdin="root-password-1\n").returncode
        == 0
    )
    assert toru(short_home, "add", "ann", stdin="ann-password-1\n").returncode == 0
    accounts = Accounts(Store(short_home / "var" / "toru.db"))

    cp = toru(short_home, "role", "ann", "admin")
    assert cp.returncode == 0 and "ann is now admin" in cp.stdout
    assert accounts.get_user("ann").role == "admin"
    assert toru(short_home, "role", "ann", "user").returncode == 0
    cp = toru(short_home, "role", "root", "user")  # the last admin
    assert cp.returncode == 1 and "last admin" in cp.stderr
    assert accounts.get_user("root").role == "admin"
    assert toru(short_home, "role", "nobody", "admin").returncode == 1

    token = toru(short_home, "token", "ann", "--name", "laptop").stdout.strip()
    assert accounts.token_user(token).username == "ann"
    cp = toru(short_home, "tokens", "ann")
    assert cp.returncode == 0
    rows = [line.split("\t") for line in cp.stdout.splitlines()]
    assert len(rows) == 1 and rows[0][1:3] == ["ann", "laptop"]
    assert token not in cp.stdout  # the secret is never shown again
    cp = toru(short_home, "revoke", rows[0][0])
    assert cp.returncode == 0, cp.stderr
    assert accounts.token_user(token) is None  # revoked for every process, at once
    assert toru(short_home, "revoke", rows[0][0]).returncode == 1  # already gone

    token = toru(short_home, "token", "ann").stdout.strip()
    assert toru(short_home, "delete", "ann").returncode == 0
    assert accounts.get_user("ann") is None and accounts.token_user(token) is None
    assert toru(short_home, "delete", "root").returncode == 1  # the last admin stays
