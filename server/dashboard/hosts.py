"""Which Host headers the dashboard answers: a defence against DNS rebinding.

A hostile page can make its own name resolve to the dashboard's address and then read
the dashboard as a same-origin page: the token, if any, is not sent (the session cookie
belongs to the real name), but without tokens everything is open, and the CSRF cookie
the hostile origin then gets is its own to read. Its requests carry its own name as the
Host header, so only the names the dashboard is really reached by are answered: the
bound address, the loopback names, and the public names given (``serve
--http-allowed-host NAME``). Bound to every address (``--host 0.0.0.0``) without a name
given, any Host is answered and a warning says so.

``/healthz`` is answered whatever the Host: it holds nothing, and a probe may address the
process by an IP no name covers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shelfrank.core.errors import InvalidInputError

log = logging.getLogger("shelfrank.dashboard")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
EVERY_ADDRESS = frozenset({"", "0.0.0.0", "::", "[::]"})
ANY_HOST = "*"
_FORBIDDEN = frozenset(" \t\r\n/\\?#@,")


def _as_host(name: str) -> str:
    """A name or address as a Host header writes it (an IPv6 address in brackets)."""
    return f"[{name}]" if ":" in name and not name.startswith("[") else name.lower()


def _checked(name: str, index: int) -> str:
    where = f"http_allowed_hosts[{index}]"
    if not name or any(char in _FORBIDDEN or ord(char) < 0x20 for char in name):
        raise InvalidInputError(f"{where}: {name!r} is not a host name")
    if name != ANY_HOST and "*" in name and (not name.startswith("*.") or "*" in name[1:]):
        raise InvalidInputError(f"{where}: a wildcard must be like '*.example.com', got {name!r}")
    return _as_host(name)


def allowed_hosts(bound: str, extra: Sequence[str]) -> tuple[str, ...]:
    """The Host names (no port) answered by a dashboard bound to ``bound``, with the
    names in ``extra`` (``*.example.com`` covers the subdomains; ``*`` any name)."""
    names = [_checked(name, index) for index, name in enumerate(extra)]
    if bound in EVERY_ADDRESS and not names:
        log.warning(
            "dashboard: bound to every address (%r) with no --http-allowed-host: any Host"
            " header is answered, so a page on another site could read it through DNS"
            " rebinding; name the host(s) it is reached by",
            bound,
        )
        return (ANY_HOST,)
    if ANY_HOST in names:
        return (ANY_HOST,)
    own = [] if bound in EVERY_ADDRESS else [_as_host(bound)]
    return tuple(dict.fromkeys([*LOOPBACK_NAMES, *own, *names]))


class HostCheck:
    """Starlette's TrustedHostMiddleware (400 for another Host), ``/healthz`` aside."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.checked = TrustedHostMiddleware(app, allowed_hosts=list(hosts), www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        await self.checked(scope, receive, send)
