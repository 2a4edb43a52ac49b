"""Browser sessions without server-side state, CSRF tokens and safe redirects.

A session cookie is ``<caller>.<expiry_ms>.<hex HMAC-SHA256>`` keyed by the caller's own
token: it holds no secret, cannot be forged or extended without the token, is valid on
every replica sharing the token (nothing to share but the token) and dies with it when
the token changes. The caller's name is percent-encoded in the cookie (a name may hold
characters a cookie may not); the MAC covers the name itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

SESSION_COOKIE = "shelfrank_session"
CSRF_COOKIE = "shelfrank_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
# Replicas' clocks differ a little: a cookie made by one is not refused by another as
# expiring too late.
CLOCK_SLACK_MS = 5 * 60 * 1000


def _mac(token: str, caller: str, expiry_ms: int) -> str:
    message = f"shelfrank-dashboard:{caller}:{expiry_ms}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


class Sessions:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        """``tokens``: caller name -> token (as server/callers.py)."""
        self._tokens = dict(tokens)

    def cookie_for(self, caller: str, now_ms: int) -> str:
        expiry_ms = now_ms + SESSION_SECONDS * 1000
        mac = _mac(self._tokens[caller], caller, expiry_ms)
        return f"{quote(caller, safe='')}.{expiry_ms}.{mac}"

    def caller_of(self, cookie: str | None, now_ms: int) -> str | None:
        """The caller a session cookie names, or None (absent, malformed, forged,
        expired, or its caller's token gone)."""
        if not cookie:
            return None
        parts = cookie.rsplit(".", 2)
        if len(parts) != 3:
            return None
        quoted, expiry, mac = parts
        # ASCII digits only: str.isdigit() also takes '²', which int() then refuses.
        if re.fullmatch(r"[0-9]{1,16}", expiry) is None:
            return None
        caller = unquote(quoted)
        token = self._tokens.get(caller)
        expiry_ms = int(expiry)
        latest = now_ms + SESSION_SECONDS * 1000 + CLOCK_SLACK_MS
        if token is None or not now_ms < expiry_ms <= latest:
            return None
        return caller if hmac.compare_digest(mac, _mac(token, caller, expiry_ms)) else None


def new_csrf_token() -> str:
    return secrets.token_hex(16)


def csrf_matches(cookie: str | None, given: str | None) -> bool:
    """The double submit: the value sent (header or form field) equals the cookie, which
    a page on another site can neither read nor set."""
    if not cookie or not given:
        return False
    return hmac.compare_digest(cookie.encode(), given.encode())


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, else ``/`` (no open redirect:
    no scheme, no host, no ``//`` or ``/\\`` that browsers read as another host)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target
