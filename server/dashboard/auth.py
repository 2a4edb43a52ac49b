"""Who may use the dashboard: the gRPC callers' tokens, as a bearer header (scripts) or
a session cookie (browsers, after ``POST /login``), and CSRF on every POST a browser
could be tricked into sending.

Open without a token: the login page and form, logout (it only clears cookies, under its
own CSRF check), ``/healthz`` and ``/static/*`` (no data there). Everything else needs a
caller when tokens are configured; without tokens everyone is "anonymous", and POSTs
still need the CSRF double submit (a page on another site must not toggle availability).
A request with a valid bearer token needs no CSRF check: a browser never adds that
header by itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import quote

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shelfrank.server.callers import Callers
from shelfrank.server.dashboard.errors import error_response
from shelfrank.server.dashboard.sessions import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    Sessions,
    csrf_matches,
)
from shelfrank.server.service import ANONYMOUS

OPEN = {
    ("GET", "/login"),
    ("HEAD", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access:
    """The callers and their tokens (name -> token) the dashboard accepts."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.callers = Callers(tokens)
        self.sessions = Sessions(tokens)

    @property
    def required(self) -> bool:
        return self.callers.required

    def actor(self, request: Request, now_ms: int) -> tuple[str | None, bool]:
        """(the caller's name or None, whether a bearer header named it)."""
        if not self.required:
            return ANONYMOUS, False
        authorization = request.headers.get("authorization")
        if authorization is not None:  # a wrong header is refused, whatever the cookie says
            return self.callers.authenticate(authorization), True
        return self.sessions.caller_of(request.cookies.get(SESSION_COOKIE), now_ms), False


def is_api_path(path: str) -> bool:
    """Whether a path is the JSON API's (answered in JSON, never with a page)."""
    return path == "/api" or path.startswith("/api/")


def actor_of(request: Request) -> str:
    """The caller the middleware let through."""
    return str(request.scope["state"]["actor"])


class AuthMiddleware:
    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if path.startswith("/static/") or (method, path) in OPEN:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        actor, by_bearer = self.access.actor(request, int(time.time() * 1000))
        refusal: Response | None = None
        if actor is None:
            refusal = _unauthenticated(request)
        elif (
            method not in SAFE_METHODS
            and not by_bearer
            and not csrf_matches(request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER))
        ):
            refusal = error_response(
                grpc.StatusCode.PERMISSION_DENIED,
                f"X-CSRF-Token: missing or not the {CSRF_COOKIE} cookie's value",
            )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["actor"] = actor
        await self.app(scope, receive, send)


def _unauthenticated(request: Request) -> Response:
    """Scripts are told (401); people are sent to the login page, and back afterwards."""
    path = request.scope["path"]
    if is_api_path(path):
        return error_response(
            grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token or session"
        )
    # As the browser sent it (still percent-encoded: an id holding '/' or '?' survives).
    raw = request.scope.get("raw_path")
    target = raw.decode("latin-1") if raw else quote(path)
    target += f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
