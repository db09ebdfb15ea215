"""License keys, as in the original Toru: ``base64("instance_id:expiry:hex(hmac_sha256)")``.

The HMAC-SHA256 is over ``"instance_id:expiry"`` with a secret only the issuer holds;
``expiry`` is ``never`` or an ISO date (valid through that day, UTC). Verification compares
signatures in constant time and says precisely why a key is refused.

    key = issue("3f2c...", "2027-12-31", secret)
    info = verify(key, secret, instance_id="3f2c...")

CLI: ``toru license issue --instance ID --expiry DATE`` and ``toru license verify KEY``; the
secret comes from ``TORU_LICENSE_SECRET`` or else the first line of stdin.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import getpass
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass

__all__ = [
    "ExpiredLicense",
    "LicenseError",
    "LicenseInfo",
    "MalformedLicense",
    "TamperedLicense",
    "WrongInstance",
    "cli",
    "issue",
    "verify",
]

NEVER = "never"


class LicenseError(ValueError):
    """A license key was refused; the subclass says why."""


class MalformedLicense(LicenseError):
    """Not base64 of ``instance_id:expiry:signature``."""


class TamperedLicense(LicenseError):
    """The signature does not match the contents (or the secret is different)."""


class ExpiredLicense(LicenseError):
    """The key was valid, but its expiry date has passed."""


class WrongInstance(LicenseError):
    """The key was issued for another instance."""


@dataclass(frozen=True)
class LicenseInfo:
    instance_id: str
    expiry: dt.date | None  # None means it never expires

    @property
    def expiry_text(self) -> str:
        return NEVER if self.expiry is None else self.expiry.isoformat()


def _secret_bytes(secret: str | bytes) -> bytes:
    data = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not data:
        raise ValueError("the license secret must not be empty")
    return data


def _parse_expiry(expiry: str) -> dt.date | None:
    if expiry == NEVER:
        return None
    try:
        return dt.date.fromisoformat(expiry)
    except ValueError:
        raise MalformedLicense(
            f"expiry must be 'never' or an ISO date (YYYY-MM-DD), got {expiry!r}"
        ) from None


def _sign(secret: bytes, instance_id: str, expiry: str) -> str:
    return hmac.new(secret, f"{instance_id}:{expiry}".encode(), hashlib.sha256).hexdigest()


def issue(instance_id: str, expiry: str | dt.date, secret: str | bytes) -> str:
    """A key for ``instance_id`` valid through ``expiry`` (``"never"``, ISO date or date)."""
    if not instance_id or not isinstance(instance_id, str):
        raise ValueError("instance_id must be a non-empty string")
    text = expiry.isoformat() if isinstance(expiry, dt.date) else str(expiry).strip().lower()
    if text != NEVER:
        try:
            text = dt.date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValueError(
                f"expiry must be 'never' or an ISO date (YYYY-MM-DD), got {expiry!r}"
            ) from None
    sig = _sign(_secret_bytes(secret), instance_id, text)
    return base64.b64encode(f"{instance_id}:{text}:{sig}".encode()).decode("ascii")


def verify(
    key: str,
    secret: str | bytes,
    instance_id: str | None = None,
    today: dt.date | None = None,
) -> LicenseInfo:
    """Check ``key``; returns its ``LicenseInfo`` or raises a ``LicenseError`` subclass.

    Checks in order: well-formed, signature (constant-time), instance (when given), expiry
    (against ``today``, default the current UTC date).
    """
    secret_b = _secret_bytes(secret)
    try:
        raw = base64.b64decode("".join(key.split()), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, AttributeError):
        raise MalformedLicense("license key is not valid base64 text") from None
    parts = raw.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise MalformedLicense("license key does not have the form instance_id:expiry:signature")
    iid, expiry, sig = parts
    if len(sig) != 64 or any(c not in "0123456789abcdef" for c in sig.lower()):
        raise MalformedLicense("license signature is not a hex HMAC-SHA256")
    expected = _sign(secret_b, iid, expiry)
    if not hmac.compare_digest(expected.encode(), sig.lower().encode()):
        raise TamperedLicense("license signature does not match (tampered key or wrong secret)")
    date = _parse_expiry(expiry)
    if instance_id is not None and not hmac.compare_digest(iid.encode(), instance_id.encode()):
        raise WrongInstance(f"license is for instance {iid!r}, not {instance_id!r}")
    today = today or dt.datetime.now(dt.UTC).date()
    if date is not None and today > date:
        raise ExpiredLicense(f"license expired on {date.isoformat()}")
    return LicenseInfo(iid, date)


def _read_secret() -> str:
    secret = os.environ.get("TORU_LICENSE_SECRET")
    if secret:
        return secret
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass("License secret: ")
    return (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")


def cli(args: argparse.Namespace) -> int:
    """``toru license issue|verify`` (see ``toru/cli.py`` for the arguments)."""
    secret = _read_secret()
    if not secret:
        sys.stderr.write("error: no secret: set TORU_LICENSE_SECRET or pass it on stdin\n")
        return 2
    try:
        if args.license_command == "issue":
            print(issue(args.instance, args.expiry, secret))
            return 0
        info = verify(args.key, secret, instance_id=getattr(args, "instance", None))
    except LicenseError as exc:
        sys.stderr.write(f"invalid license: {exc}\n")
        return 1
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    print(f"valid: instance {info.instance_id}, expires {info.expiry_text}")
    return 0
