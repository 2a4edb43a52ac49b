"""The gRPC face of :class:`RecommenderService`: validate, translate, call. No business
logic lives here. Service exceptions map to status codes through one table."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import wraps
from operator import attrgetter
from typing import Any, NoReturn, TypeVar

import grpc

from shelfrank.core.errors import InvalidInputError, StorageError
from shelfrank.core.events import EventType
from shelfrank.core.explain import Explanation
from shelfrank.proto._generated import edge_sync_pb2 as edge_pb
from shelfrank.proto._generated import edge_sync_pb2_grpc as edge_pb_grpc
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.callers import Callers
from shelfrank.server.requests import (
    NO_SEEN_FILTER,
    NotFoundError,
    RankQuery,
    RateLimitedError,
    RecommendQuery,
    SeenFilter,
    SimilarQuery,
    TooLargeError,
)
from shelfrank.server.service import RecommenderService, Scored
from shelfrank.server.snapshots import SnapshotService, chunks

log = logging.getLogger("shelfrank.server")

# Most specific first: TooLargeError is also an InvalidInputError. Storage trouble is
# UNAVAILABLE (clients retry it); anything else is a bug, answered INTERNAL without details.
STATUS_FOR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (TooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimitedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
)


def abort_for(exc: Exception, context: grpc.ServicerContext, method: str) -> NoReturn:
    for kind, code in STATUS_FOR:
        if isinstance(exc, kind):
            if code is grpc.StatusCode.UNAVAILABLE:
                log.warning("%s: storage unavailable: %s", method, exc)
                context.abort(code, "storage temporarily unavailable, retry")
            context.abort(code, str(exc))
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error (logged on the server)")


# An Event message as an EventRow (IncomingEvent's field order), built in C: Track batches
# are up to thousands of events and per-event Python was a third of the request's cost.
_EVENT_ROW = attrgetter(
    "event_id", "user_id", "item_id", "type", "timestamp_ms", "session_id", "query"
)

STRATEGY = {
    "trained": pb.TRAINED,
    "fold-in": pb.FOLD_IN,
    "features": pb.FEATURES,
    "popularity": pb.POPULARITY,
    "item": pb.ITEM,
}

Request = TypeVar("Request")
Response = TypeVar("Response")


def translate_errors(
    method: Callable[[Any, Request, grpc.ServicerContext], Response],
) -> Callable[[Any, Request, grpc.ServicerContext], Response]:
    @wraps(method)
    def wrapper(self: Any, request: Request, context: grpc.ServicerContext) -> Response:
        try:
            return method(self, request, context)
        except Exception as exc:
            abort_for(exc, context, method.__name__)

    return wrapper


REASON = {
    "personalized": pb.PERSONALIZED,
    "because_history": pb.BECAUSE_HISTORY,
    "similar_item": pb.SIMILAR_ITEM,
    "popular": pb.POPULAR,
    "exploration": pb.EXPLORATION,
    "new_item": pb.NEW_ITEM,
}


def _explanation(explained: Explanation) -> pb.Explanation:
    return pb.Explanation(
        reason=REASON[explained.reason],
        contributions=[
            pb.Contribution(source=source, value=value) for source, value in explained.contributions
        ],
        rest=explained.rest,
        because_item_ids=list(explained.because),
    )


def _response(scored: Scored) -> pb.RecommendResponse:
    if scored.explanations:
        items = [
            pb.ScoredItem(item_id=item, score=score, explanation=_explanation(explained))
            for (item, score), explained in zip(scored.items, scored.explanations, strict=True)
        ]
    else:
        items = [pb.ScoredItem(item_id=item, score=score) for item, score in scored.items]
    return pb.RecommendResponse(
        items=items,
        model_version=scored.model_version,
        recommendation_id=scored.recommendation_id,
        strategy=STRATEGY[scored.strategy],
    )


def _filters(filters: Any) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(f.any_of) for f in filters)


def _seen_filter(types: Any, within_ms: int) -> SeenFilter:
    if not types and not within_ms:
        return NO_SEEN_FILTER
    kinds = []
    for index, value in enumerate(types):
        try:
            kinds.append(EventType(value))
        except ValueError:
            raise InvalidInputError(
                f"exclude_event_types[{index}]: unknown event type {value}"
            ) from None
    return SeenFilter(frozenset(kinds), within_ms)


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, service: RecommenderService, callers: Callers | None = None) -> None:
        self.service = service
        self.callers = callers or Callers({})

    @translate_errors
    def Recommend(  # noqa: N802 - gRPC method names
        self, request: pb.RecommendRequest, context: grpc.ServicerContext
    ) -> pb.RecommendResponse:
        query = RecommendQuery(
            user_id=request.user_id,
            k=request.k,
            exclude_item_ids=tuple(request.exclude_item_ids),
            filters=_filters(request.filters),
            exclude_features=tuple(request.exclude_features),
            exclude_seen=request.exclude_seen if request.HasField("exclude_seen") else True,
            user_features=tuple(request.user_features),
            diversity=request.diversity,
            max_per_feature=(
                tuple(request.max_per_feature.items()) if request.max_per_feature else ()
            ),
            exploration=request.exploration if request.HasField("exploration") else None,
            exploration_max_age_ms=(
                request.exploration_max_age_ms
                if request.HasField("exploration_max_age_ms")
                else None
            ),
            recommendation_id=request.recommendation_id,
            seen=_seen_filter(request.exclude_event_types, request.exclude_within_ms),
            explain=request.explain,
        )
        return _response(self.service.recommend(query))

    @translate_errors
    def SimilarItems(  # noqa: N802
        self, request: pb.SimilarItemsRequest, context: grpc.ServicerContext
    ) -> pb.RecommendResponse:
        query = SimilarQuery(
            item_id=request.item_id,
            k=request.k,
            filters=_filters(request.filters),
            exclude_features=tuple(request.exclude_features),
            exclude_item_ids=tuple(request.exclude_item_ids),
            explain=request.explain,
        )
        return _response(self.service.similar_items(query))

    @translate_errors
    def Rank(  # noqa: N802
        self, request: pb.RankRequest, context: grpc.ServicerContext
    ) -> pb.RecommendResponse:
        query = RankQuery(
            user_id=request.user_id,
            item_ids=tuple(request.item_ids),
            user_features=tuple(request.user_features),
            explain=request.explain,
        )
        return _response(self.service.rank(query))

    @translate_errors
    def Track(  # noqa: N802
        self, request: pb.TrackRequest, context: grpc.ServicerContext
    ) -> pb.TrackResponse:
        events = list(map(_EVENT_ROW, request.events))
        outcome = self.service.track(
            events,
            connection=(
                self.callers.rate_key(dict(context.invocation_metadata() or ()), context.peer())
                if context
                else ""
            ),
            erasure_seen=request.erasure_seen if request.HasField("erasure_seen") else None,
        )
        return pb.TrackResponse(
            accepted=outcome.accepted,
            duplicates=outcome.duplicates,
            errors=[pb.EventError(index=i, message=m) for i, m in outcome.errors],
        )

    @translate_errors
    def UpsertItems(  # noqa: N802
        self, request: pb.UpsertItemsRequest, context: grpc.ServicerContext
    ) -> pb.UpsertItemsResponse:
        count = self.service.upsert_items([(i.item_id, tuple(i.features)) for i in request.items])
        return pb.UpsertItemsResponse(upserted=count)

    @translate_errors
    def UpsertUsers(  # noqa: N802
        self, request: pb.UpsertUsersRequest, context: grpc.ServicerContext
    ) -> pb.UpsertUsersResponse:
        count = self.service.upsert_users([(u.user_id, tuple(u.features)) for u in request.users])
        return pb.UpsertUsersResponse(upserted=count)

    @translate_errors
    def DeleteUser(  # noqa: N802
        self, request: pb.DeleteUserRequest, context: grpc.ServicerContext
    ) -> pb.DeleteUserResponse:
        existed, deleted = self.service.delete_user(request.user_id)
        return pb.DeleteUserResponse(existed=existed, events_deleted=deleted)

    @translate_errors
    def SetAvailability(  # noqa: N802
        self, request: pb.SetAvailabilityRequest, context: grpc.ServicerContext
    ) -> pb.SetAvailabilityResponse:
        result = self.service.set_availability(tuple(request.item_ids), request.available)
        return pb.SetAvailabilityResponse(
            changed=result.changed, unknown_item_ids=list(result.unknown_item_ids)
        )

    @translate_errors
    def GetModelInfo(  # noqa: N802
        self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        info = self.service.info()
        return pb.ModelInfo(
            model_version=info.model_version,
            trained_at_ms=info.trained_at_ms,
            users=info.users,
            items=info.items,
            stored_events=info.stored_events,
        )


class EdgeSyncServicer(edge_pb_grpc.EdgeSyncServicer):
    def __init__(self, snapshots: SnapshotService) -> None:
        self.snapshots = snapshots

    def GetSnapshot(  # noqa: N802
        self, request: edge_pb.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> Iterator[edge_pb.SnapshotChunk]:
        try:
            result = self.snapshots.for_user(request.user_id, request.have_version)
        except Exception as exc:
            abort_for(exc, context, "GetSnapshot")
        yield edge_pb.SnapshotChunk(
            header=edge_pb.SnapshotHeader(
                version=result.version,
                base_version=result.base_version,
                model_version=result.model_version,
                user_erased=result.user_erased,
                payload_bytes=len(result.payload),
                manifest_json=result.manifest_json,
                erasure_id=result.erasure_id,
            )
        )
        for part in chunks(result.payload):
            yield edge_pb.SnapshotChunk(data=part)
