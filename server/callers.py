"""Who is calling: bearer tokens, each with a caller name.

``shelfrank serve --token T`` accepts one token (the caller ``default``); ``--caller
NAME=TOKEN`` (repeatable) gives each client service its own token and name. The name keys
the per-caller event rate limit: behind a load balancer every connection comes from the
balancer, so the peer address says nothing about who is calling. Without tokens nobody is
named and the limit falls back to the connection's peer address.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from shelfrank.core.errors import InvalidInputError

DEFAULT_CALLER = "default"


class Callers:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        """``tokens``: caller name -> its token."""
        for name, token in tokens.items():
            if not name or "=" in name or not token:
                raise InvalidInputError(f"caller {name!r}: needs a name without '=' and a token")
            if not all(" " <= char <= "~" for char in token):
                raise InvalidInputError(f"caller {name!r}: the token must be printable ASCII")
        if len(set(tokens.values())) != len(tokens):
            raise InvalidInputError("callers: two callers have the same token")
        self._expected = [(f"Bearer {token}".encode(), name) for name, token in tokens.items()]

    @property
    def required(self) -> bool:
        return bool(self._expected)

    def authenticate(self, authorization: object) -> str | None:
        """The caller an ``authorization`` header names, or None (missing or wrong). Every
        token is compared, each in constant time: how long a refusal takes tells nothing."""
        given = authorization.encode() if isinstance(authorization, str) else b""
        found = None
        for expected, name in self._expected:
            if hmac.compare_digest(given, expected):
                found = name
        return found

    def rate_key(self, metadata: Mapping[str, object], peer: str) -> str:
        """What the per-caller rate limit counts against: the caller's name when tokens
        are required (the call passed the check), else the connection's peer."""
        if self.required:
            name = self.authenticate(metadata.get("authorization"))
            if name is not None:
                return f"caller:{name}"
        return f"peer:{peer}"


def parse_caller(text: str) -> tuple[str, str]:
    """``NAME=TOKEN`` (the first '=' separates them)."""
    name, separator, token = text.partition("=")
    if not separator or not name or not token:
        raise InvalidInputError(f"--caller: expected NAME=TOKEN, got {text.split('=')[0]!r}=...")
    return name, token
