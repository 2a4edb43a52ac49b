"""The JSON API under ``/api/``: validate and translate, call the service layer (the
service, its store, the feedback loop's report), shape the answer. No business rule
lives here, and nothing calls the server's own gRPC.

Handlers run the service's blocking work in the thread pool; every exception becomes
the JSON error of its gRPC code (server/dashboard/errors.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shelfrank.core.errors import InvalidInputError, UnknownIdError
from shelfrank.core.events import EventType
from shelfrank.server.dashboard import shapes
from shelfrank.server.dashboard.auth import actor_of
from shelfrank.server.dashboard.context import DashboardContext
from shelfrank.server.dashboard.errors import exception_response
from shelfrank.server.dashboard.inputs import field, int_param, read_json_object, string_list
from shelfrank.server.dashboard.item_stats import WINDOW_DAYS, shown_and_clicked
from shelfrank.server.dashboard.openapi import document as openapi_document
from shelfrank.server.dashboard.overview import overview
from shelfrank.server.dashboard.responses import SafeJSONResponse
from shelfrank.server.feedback.attribution import DEFAULT_ATTRIBUTION_WINDOW_MS
from shelfrank.server.requests import (
    EventRow,
    IncomingEvent,
    NotFoundError,
    RecommendQuery,
    SimilarQuery,
)
from shelfrank.server.storage import AuditEntry

DEFAULT_K = 10
EVENT_TYPES = {kind.label: kind for kind in EventType}
FILE_TYPES = {".png": "image/png", ".json": "application/json"}

Handler = Callable[[Request], Awaitable[Response]]


def _now_ms() -> int:
    return int(time.time() * 1000)


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
    the service validates them as Track does."""
    rows: list[EventRow] = []
    for index, entry in enumerate(field(document, "events", list, [])):
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
        context = self.context
        document = await run_in_threadpool(
            overview, self.service, replica=context.replica, role=context.role, now_ms=_now_ms()
        )
        return SafeJSONResponse(document)

    async def user(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        query = RecommendQuery(user_id=user_id, k=int_param(request, "k", DEFAULT_K), explain=True)

        def look() -> dict[str, Any]:
            view = self.service.user_record(user_id)
            return shapes.user(user_id, view, self.service.recommend(query, record=False))

        return SafeJSONResponse(await run_in_threadpool(look))

    async def what_if(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        document = await read_json_object(request)
        events = what_if_events(document, user_id)
        features = string_list(document, "features")
        k = field(document, "k", int, DEFAULT_K)
        query = RecommendQuery(user_id=user_id, k=k, explain=True)

        def compare() -> dict[str, Any]:
            self.service.user_record(user_id)
            before = self.service.recommend(query, record=False)
            after = self.service.what_if(user_id, events, features, k)
            return {
                "before": shapes.recommendations(before),
                "after": shapes.recommendations(after),
            }

        return SafeJSONResponse(await run_in_threadpool(compare))

    async def item(self, request: Request) -> Response:
        item_id = request.path_params["item_id"]
        query = SimilarQuery(item_id=item_id, k=DEFAULT_K, explain=True)
        feedback = self.service.feedback
        window_ms = DEFAULT_ATTRIBUTION_WINDOW_MS if feedback is None else feedback.window_ms

        def look() -> dict[str, Any]:
            record = self.service.item_record(item_id)
            store = self.service.store
            similar = self.service.similar_items(query, record=False)
            shown, clicked = shown_and_clicked(
                store, item_id, now_ms=_now_ms(), window_ms=window_ms
            )
            return {
                "item_id": item_id,
                "features": list(record.tokens),
                "available": record.available,
                "similar": shapes.recommendations(similar),
                "shown": shown,
                "clicked": clicked,
                "window_days": WINDOW_DAYS,
                "audit": shapes.audit(store.audit_entries(f"item:{item_id}")),
            }

        return SafeJSONResponse(await run_in_threadpool(look))

    async def availability(self, request: Request) -> Response:
        item_id = request.path_params["item_id"]
        document = await read_json_object(request)
        available = field(document, "available", bool, None)
        if available is None:
            raise InvalidInputError("available: must be true or false")
        actor = actor_of(request)

        def change() -> dict[str, Any]:
            # The same service call as gRPC's SetAvailability: every process serves it
            # from its next call.
            result = self.service.set_availability([item_id], available)
            if result.unknown_item_ids:
                raise NotFoundError(f"item_id: unknown item {item_id!r}")
            self.service.store.record_audit(
                AuditEntry(
                    time_ms=_now_ms(),
                    actor=actor,
                    action="availability",
                    target=f"item:{item_id}",
                    detail=f"available={'true' if available else 'false'}",
                )
            )
            return {"changed": result.changed > 0, "available": available}

        return SafeJSONResponse(await run_in_threadpool(change))

    async def experiments(self, request: Request) -> Response:
        report = await run_in_threadpool(self.service.report)
        return SafeJSONResponse(report.to_json())

    async def evaluations(self, request: Request) -> Response:
        stored = await run_in_threadpool(self.service.store.evaluations)
        return SafeJSONResponse({"evaluations": [shapes.evaluation(info) for info in stored]})

    async def evaluation(self, request: Request) -> Response:
        name = request.path_params["name"]

        def read() -> dict[str, Any]:
            store = self.service.store
            info = next((e for e in store.evaluations() if e.name == name), None)
            if info is None:
                raise NotFoundError(f"name: unknown evaluation {name!r}")
            report = None
            if "report.json" in info.files:
                report = json.loads(self._file(name, "report.json"))
            return {**shapes.evaluation(info), "report": report}

        return SafeJSONResponse(await run_in_threadpool(read))

    async def evaluation_file(self, request: Request) -> Response:
        name, file = request.path_params["name"], request.path_params["file"]
        content = await run_in_threadpool(self._file, name, file)
        suffix = file[file.rfind(".") :].lower() if "." in file else ""
        media_type = FILE_TYPES.get(suffix, "application/octet-stream")
        response = Response(content, media_type=media_type)
        if suffix not in FILE_TYPES:  # never rendered by the browser as a page
            response.headers["Content-Disposition"] = "attachment"
        return response

    def _file(self, name: str, file: str) -> bytes:
        try:
            return self.service.store.evaluation_file(name, file)
        except UnknownIdError as exc:
            # The resource the URL names is missing: 404, not a bad argument.
            raise NotFoundError(str(exc)) from None
