"""The JSON API under ``/api/``: validate and translate, call the service layer, shape
the answer. No business rule lives here, nothing reads the store past the service, and
nothing calls the server's own gRPC.

Handlers run the service's blocking work in the thread pool; every exception becomes
the JSON error of its gRPC code (server/dashboard/errors.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType
from shelfrank.server.dashboard import shapes
from shelfrank.server.dashboard.auth import actor_of
from shelfrank.server.dashboard.context import DashboardContext
from shelfrank.server.dashboard.errors import exception_response
from shelfrank.server.dashboard.inputs import field, int_param, read_json_object, string_list
from shelfrank.server.dashboard.openapi import document as openapi_document
from shelfrank.server.dashboard.responses import SafeJSONResponse
from shelfrank.server.requests import EventRow, IncomingEvent, NotFoundError, SimilarQuery
from shelfrank.server.service import check_batch

DEFAULT_K = 10
EVENT_TYPES = {kind.label: kind for kind in EventType}
FILE_TYPES = {".png": "image/png", ".json": "application/json"}

Handler = Callable[[Request], Awaitable[Response]]


def translated(handler: Handler) -> Handler:
    """Every exception answered as the JSON error of its gRPC code."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return exception_response(exc, f"{request.method} {request.url.path}")

    return endpoint


def what_if_events(document: dict[str, Any], user_id: str) -> list[EventRow]:
    """The body's events as Track's rows (types by their labels, as the pages show them);
    the service validates them as Track does. At most a Track batch: counted before any
    row is built."""
    entries = field(document, "events", list, [])
    check_batch(len(entries), "events")
    rows: list[EventRow] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidInputError(f"events[{index}]: must be an object")
        item_id = field(entry, "item_id", str, "", f"events[{index}].")
        label = field(entry, "type", str, "", f"events[{index}].")
        kind = EVENT_TYPES.get(label)
        if kind is None:
            allowed = ", ".join(EVENT_TYPES)
            raise InvalidInputError(
                f"events[{index}].type: unknown event type {label!r} (expected one of {allowed})"
            )
        rows.append(IncomingEvent(f"what-if-{index}", user_id, item_id, int(kind)))
    return rows


class Api:
    def __init__(self, context: DashboardContext) -> None:
        self.context = context
        self.service = context.service

    def routes(self) -> list[Route]:
        return [
            Route("/api/openapi.json", translated(self.openapi), methods=["GET"]),
            Route("/api/overview", translated(self.overview), methods=["GET"]),
            Route("/api/users/{user_id:path}/what-if", translated(self.what_if), methods=["POST"]),
            Route("/api/users/{user_id:path}", translated(self.user), methods=["GET"]),
            Route(
                "/api/items/{item_id:path}/availability",
                translated(self.availability),
                methods=["POST"],
            ),
            Route("/api/items/{item_id:path}", translated(self.item), methods=["GET"]),
            Route("/api/experiments", translated(self.experiments), methods=["GET"]),
            Route("/api/evaluations", translated(self.evaluations), methods=["GET"]),
            Route(
                "/api/evaluations/{name}/files/{file}",
                translated(self.evaluation_file),
                methods=["GET"],
            ),
            Route("/api/evaluations/{name}", translated(self.evaluation), methods=["GET"]),
        ]

    async def openapi(self, request: Request) -> Response:
        return SafeJSONResponse(openapi_document())

    async def overview(self, request: Request) -> Response:
        now_ms = int(time.time() * 1000)
        found = await run_in_threadpool(self.service.overview, now_ms)
        context = self.context
        return SafeJSONResponse(
            shapes.overview(found, replica=context.replica, role=context.role, now_ms=now_ms)
        )

    async def user(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        k = int_param(request, "k", DEFAULT_K)
        look = await run_in_threadpool(self.service.look, user_id, k)
        return SafeJSONResponse(shapes.user(user_id, look))

    async def what_if(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        document = await read_json_object(request)
        events = what_if_events(document, user_id)
        features = string_list(document, "features")
        k = field(document, "k", int, DEFAULT_K)
        compared = await run_in_threadpool(self.service.what_if, user_id, events, features, k)
        return SafeJSONResponse(
            {
                "before": shapes.recommendations(compared.before),
                "after": shapes.recommendations(compared.after),
            }
        )

    async def item(self, request: Request) -> Response:
        item_id = request.path_params["item_id"]
        query = SimilarQuery(item_id=item_id, k=DEFAULT_K, explain=True)

        def look() -> dict[str, Any]:
            insight = self.service.item_insight(item_id)
            return shapes.item(insight, self.service.similar_items(query, record=False))

        return SafeJSONResponse(await run_in_threadpool(look))

    async def availability(self, request: Request) -> Response:
        item_id = request.path_params["item_id"]
        document = await read_json_object(request)
        available = field(document, "available", bool, None)
        if available is None:
            raise InvalidInputError("available: must be true or false")
        # The same service call as gRPC's SetAvailability (audited there, as here): every
        # process serves it from its next call.
        actor = actor_of(request)
        result = await run_in_threadpool(
            self.service.set_availability, [item_id], available, actor=actor
        )
        if result.unknown_item_ids:
            raise NotFoundError(f"item_id: unknown item {item_id!r}")
        return SafeJSONResponse({"changed": result.changed > 0, "available": available})

    async def experiments(self, request: Request) -> Response:
        report = await run_in_threadpool(self.service.report)
        return SafeJSONResponse(report.to_json())

    async def evaluations(self, request: Request) -> Response:
        stored = await run_in_threadpool(self.service.evaluations)
        return SafeJSONResponse({"evaluations": [shapes.evaluation(info) for info in stored]})

    async def evaluation(self, request: Request) -> Response:
        found = await run_in_threadpool(self.service.evaluation, request.path_params["name"])
        return SafeJSONResponse({**shapes.evaluation(found.info), "report": found.report})

    async def evaluation_file(self, request: Request) -> Response:
        name, file = request.path_params["name"], request.path_params["file"]
        content = await run_in_threadpool(self.service.evaluation_file, name, file)
        suffix = file[file.rfind(".") :].lower() if "." in file else ""
        media_type = FILE_TYPES.get(suffix, "application/octet-stream")
        response = Response(content, media_type=media_type)
        if suffix not in FILE_TYPES:  # never rendered by the browser as a page
            response.headers["Content-Disposition"] = "attachment"
        return response
