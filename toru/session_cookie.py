"""Toru's session cookie, and the rule that a plugin's ``Set-Cookie`` must not name it.

A plugin that could set or clear ``toru_session`` could fix a user's session or log them
out (docs/SECURITY.md). The web tier removes such a header from the reply
(toru/wsgi/headers.py); the supervisor, which checks every reply, writes the warning to the
plugin's log. Both ask the same function here (no web-framework import, for the supervisor).
"""

from __future__ import annotations

from typing import Any

COOKIE = "toru_session"
# Lower-case names a plugin must not set: the cookie and the prefixed forms a browser would
# keep beside it. Toru sets no CSRF cookie (the token is a header), so there is no other.
_TORU_COOKIES = frozenset({COOKIE, "__host-" + COOKIE, "__secure-" + COOKIE})

REFUSED_COOKIE = (
    f"a reply's Set-Cookie named Toru's session cookie ({COOKIE}); Toru removed it (plugins"
    " cannot set or clear Toru's login); the plugin's other cookies were kept"
)


def names_toru_cookie(set_cookie: str) -> bool:
    """Whether a ``Set-Cookie`` value would set or clear one of Toru's cookies.

    Compared case-insensitively. A nameless cookie (``=toru_session=x``) counts too: a
    browser sends it back as ``toru_session=x``.
    """
    text = set_cookie.lstrip()
    if text[:1] == "=":
        text = text[1:]
    return text.split(";", 1)[0].split("=", 1)[0].strip().lower() in _TORU_COOKIES


def sets_toru_cookie(headers: Any) -> bool:
    """Whether a reply's ``headers`` object has a ``Set-Cookie`` that names Toru's cookie.

    PERF: runs on every reply in the supervisor; a name of another length costs a ``len``.
    """
    if not headers:
        return False
    for name, value in headers.items():
        if len(name) == 10 and name.lower() == "set-cookie" and names_toru_cookie(value):
            return True
    return False
