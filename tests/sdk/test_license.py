"""License keys: issue/verify, tampering, expiry, wrong instance, CLI."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys

import pytest

from toru_plugin_api.license import (
    ExpiredLicense,
    MalformedLicense,
    TamperedLicense,
    WrongInstance,
    issue,
    verify,
)

SECRET = "correct horse battery staple"


def test_issue_format_is_the_original_one():
    key = issue("inst-1", "2030-01-31", SECRET)
    iid, expiry, sig = base64.b64decode(key).decode().split(":")
    assert (iid, expiry, len(sig)) == ("inst-1", "2030-01-31", 64)


def test_verify_accepts_a_good_key_through_its_expiry_day():
    key = issue("inst-1", dt.date(2030, 1, 31), SECRET)
    info = verify(key, SECRET, instance_id="inst-1", today=dt.date(2030, 1, 31))
    assert (info.instance_id, info.expiry, info.expiry_text) == (
        "inst-1",
        dt.date(2030, 1, 31),
        "2030-01-31",
    )


def test_never_expires():
    info = verify(issue("i", "never", SECRET), SECRET, today=dt.date(2999, 1, 1))
    assert info.expiry is None and info.expiry_text == "never"


def test_expired():
    key = issue("i", "2020-01-01", SECRET)
    with pytest.raises(ExpiredLicense, match="2020-01-01"):
        verify(key, SECRET, today=dt.date(2020, 1, 2))


def test_wrong_instance():
    with pytest.raises(WrongInstance):
        verify(issue("a", "never", SECRET), SECRET, instance_id="b")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw.replace("inst-1", "inst-2"),
        lambda raw: raw.replace("2030-01-31", "2099-01-31"),
        lambda raw: raw[:-1] + ("0" if raw[-1] != "0" else "1"),
    ],
)
def test_tampering_is_detected(mutate):
    raw = base64.b64decode(issue("inst-1", "2030-01-31", SECRET)).decode()
    with pytest.raises(TamperedLicense):
        verify(base64.b64encode(mutate(raw).encode()).decode(), SECRET)


def test_wrong_secret_is_tampered():
    with pytest.raises(TamperedLicense):
        verify(issue("i", "never", SECRET), "other secret")


@pytest.mark.parametrize(
    "key",
    ["", "***", base64.b64encode(b"only:two").decode(), base64.b64encode(b"a:never:xyz").decode()],
)
def test_malformed(key):
    with pytest.raises(MalformedLicense):
        verify(key, SECRET)


def test_issue_rejects_bad_input():
    with pytest.raises(ValueError):
        issue("i", "someday", SECRET)
    with pytest.raises(ValueError):
        issue("i", "never", "")


def test_cli_issue_and_verify_with_secret_on_stdin_and_env():
    toru = [sys.executable, "-m", "toru.cli", "license"]
    key = subprocess.run(
        [*toru, "issue", "--instance", "inst-9", "--expiry", "never"],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ok = subprocess.run(
        [*toru, "verify", key, "--instance", "inst-9"],
        env={"TORU_LICENSE_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "instance inst-9" in ok.stdout
    bad = subprocess.run([*toru, "verify", key], input="wrong\n", capture_output=True, text=True)
    assert bad.returncode == 1 and "does not match" in bad.stderr
