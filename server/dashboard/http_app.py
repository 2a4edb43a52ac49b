"""The dashboard's ASGI application: pages, JSON API, static files, behind the token.

Layers, outermost first: security headers (every response, errors included), the
Starlette app (its error handler), authentication and CSRF, the routes.
"""

from __future__ import annotations

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from shelfrank.server.dashboard.api import Api
from shelfrank.server.dashboard.auth import AuthMiddleware
from shelfrank.server.dashboard.context import DashboardContext
from shelfrank.server.dashboard.errors import error_response, exception_response
from shelfrank.server.dashboard.headers import SecurityHeaders
from shelfrank.server.dashboard.pages import Pages, shell
from shelfrank.server.dashboard.responses import SafeJSONResponse


def _is_api(request: Request) -> bool:
    path: str = request.scope["path"]
    return path == "/api" or path.startswith("/api/")


def create_app(context: DashboardContext) -> ASGIApp:
    async def healthz(request: Request) -> Response:
        return SafeJSONResponse({"status": "ok"})

    async def no_route(request: Request, exc: Exception) -> Response:
        # No such page or method: the API says so in JSON, a browser gets the page.
        if _is_api(request):
            return error_response(
                grpc.StatusCode.NOT_FOUND, f"no {request.method} {request.url.path}"
            )
        return shell(context.static_dir, request, "not-found", 404)

    async def failed(request: Request, exc: Exception) -> Response:
        return exception_response(exc, f"{request.method} {request.url.path}")

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        *Api(context).routes(),
        *Pages(context).routes(),
        Mount("/static", StaticFiles(directory=context.static_dir, check_dir=False)),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(AuthMiddleware, access=context.access)],
        exception_handlers={HTTPException: no_route, Exception: failed},
    )
    return SecurityHeaders(app)
