"""The dashboard's ASGI application: pages, JSON API, static files, behind the token.

Layers, outermost first: security headers (every response, errors included), the Host
check (server/dashboard/hosts.py), the Starlette app (its error handler),
authentication and CSRF, the routes.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from shelfrank.server.dashboard.api import Api
from shelfrank.server.dashboard.auth import AuthMiddleware, is_api_path
from shelfrank.server.dashboard.context import DashboardContext
from shelfrank.server.dashboard.errors import code_for_status, error_response, exception_response
from shelfrank.server.dashboard.headers import SecurityHeaders
from shelfrank.server.dashboard.hosts import HostCheck
from shelfrank.server.dashboard.pages import Pages
from shelfrank.server.dashboard.responses import SafeJSONResponse


class AssetFiles(StaticFiles):
    """/static/: scripts, styles, icons and the vendored chart library. Not the .html
    files there (the layout and the page fragments): the pages are served whole, at their
    own paths (pages.py)."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        full_path, found = super().lookup_path(path)
        if full_path.lower().endswith(".html"):
            return "", None
        return full_path, found


def create_app(context: DashboardContext) -> ASGIApp:
    pages = Pages(context)  # the page shells are put together here, once

    async def healthz(request: Request) -> Response:
        return SafeJSONResponse({"status": "ok"})

    async def no_route(request: Request, exc: Exception) -> Response:
        # No such path (404) or not with this method (405, its Allow header kept): the API
        # says so in JSON with the code of that status, a browser gets the page.
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if is_api_path(request.scope["path"]):
            headers = exc.headers if isinstance(exc, HTTPException) else None
            return error_response(
                code_for_status(status), f"no {request.method} {request.url.path}", headers
            )
        return pages.shell(request, "not-found", status)

    async def failed(request: Request, exc: Exception) -> Response:
        return exception_response(exc, f"{request.method} {request.url.path}")

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        *Api(context).routes(),
        *pages.routes(),
        Mount("/static", AssetFiles(directory=context.static_dir, check_dir=False)),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(AuthMiddleware, access=context.access)],
        exception_handlers={HTTPException: no_route, Exception: failed},
    )
    return SecurityHeaders(HostCheck(app, context.allowed_hosts))
