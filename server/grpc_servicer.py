"""The gRPC face of :class:`RecommenderService`: validate, translate, call. No business
logic lives here. Service exceptions map to status codes through one table."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from functools import wraps
from operator import attrgetter
from typing import Any, NoReturn, TypeVar

import grpc

from shelfrank.core.errors import InvalidInputError, StorageError
from shelfrank.core.events import EventType
from shelfrank.proto._generated import edge_sync_pb2 as edge_pb
from shelfrank.proto._generated import edge_sync_pb2_grpc as edge_pb_grpc
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.callers import Callers
from shelfrank.server.feedback.report import FeedbackReport
from shelfrank.server.requests import (
    NO_SEEN_FILTER,
    FailedPreconditionError,
    NotFoundError,
    RankQuery,
    RateLimitedError,
    RecommendQuery,
    SeenFilter,
    SimilarQuery,
    TooLargeError,
    shown_impression,
)
from shelfrank.server.service import ANONYMOUS, RecommenderService, Scored
from shelfrank.server.snapshots import SnapshotService, chunks

log = logging.getLogger("shelfrank.server")

# Most specific first: TooLargeError is also an InvalidInputError. Storage trouble is
# UNAVAILABLE (clients retry it); anything else is a bug, answered INTERNAL without details.
STATUS_FOR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (TooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimitedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
)


def status_of(exc: Exception, what: str) -> tuple[grpc.StatusCode, str]:
    """The status code and public message of an exception raised while doing ``what``
    (a gRPC method; the dashboard's JSON errors use it too, so both say the same): a
    known kind's own message, which names the field at fault. Storage trouble is logged
    as a warning and answered in general terms (clients retry it); anything else is a
    bug, logged with its traceback and answered INTERNAL without details."""
    for kind, code in STATUS_FOR:
        if isinstance(exc, kind):
            if code is grpc.StatusCode.UNAVAILABLE:
                log.warning("%s: storage unavailable: %s", what, exc)
                return code, "storage temporarily unavailable, retry"
            return code, str(exc)
    log.error("%s failed", what, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"{what}: internal error (logged on the server)"


def abort_for(exc: Exception, context: grpc.ServicerContext, method: str) -> NoReturn:
    context.abort(*status_of(exc, method))


# An Event message as an EventRow (IncomingEvent's field order), built in C: Track batches
# are up to thousands of events and per-event Python was a third of the request's cost.
_EVENT_ROW = attrgetter(
    "event_id",
    "user_id",
    "item_id",
    "type",
    "timestamp_ms",
    "session_id",
    "query",
    "recommendation_id",
    "position",
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


def _response(scored: Scored) -> pb.RecommendResponse:
    response = pb.RecommendResponse(
        model_version=scored.model_version,
        recommendation_id=scored.recommendation_id,
        strategy=STRATEGY[scored.strategy],
        variant=scored.variant,
        experiment=scored.experiment,
    )
    items = response.items
    if not scored.explanations:
        for item, score in scored.items:
            items.add(item_id=item, score=score)
        return response
    # Filled in place (add / extend): half the cost of building each message and
    # copying it in, which an explained response of 60 contributions pays.
    for (item, score), explained in zip(scored.items, scored.explanations, strict=True):
        explanation = items.add(item_id=item, score=score).explanation
        explanation.SetInParent()  # present even when every field keeps its default
        explanation.reason = REASON[explained.reason]
        explanation.rest = explained.rest
        contributions = explanation.contributions
        for source, value in explained.contributions:
            contributions.add(source=source, value=value)
        explanation.because_item_ids.extend(explained.because)
    return response


def _rate(variant: dict[str, Any], name: str) -> pb.Rate:
    low, high = variant[f"{name}_ci"]
    return pb.Rate(value=variant[name], low=low, high=high)


def report_message(report: FeedbackReport) -> pb.GetReportResponse:
    """The report's JSON (its one documented shape) as the typed message, plus the JSON."""
    document = report.to_json()
    experiments = []
    for experiment in document["experiments"]:
        variants = [
            pb.VariantReport(
                name=v["name"],
                impressions=v["impressions"],
                clicks=v["clicks"],
                carts=v["carts"],
                purchases=v["purchases"],
                dismissals=v["dismissals"],
                ctr=_rate(v, "ctr"),
                add_to_cart_rate=_rate(v, "add_to_cart_rate"),
                conversion=_rate(v, "conversion"),
                dismissal_rate=_rate(v, "dismissal_rate"),
            )
            for v in experiment["variants"]
        ]
        comparisons = [
            pb.Comparison(
                variant=c["variant"],
                control=c["control"],
                metric=c["metric"],
                difference=c["difference"],
                low=c["ci"][0],
                high=c["ci"][1],
                always_valid_low=c["always_valid_ci"][0],
                always_valid_high=c["always_valid_ci"][1],
                p_value=c["p_value"],
                verdict=c["verdict"],
            )
            for c in experiment["comparisons"]
        ]
        experiments.append(
            pb.ExperimentReport(name=experiment["name"], variants=variants, comparisons=comparisons)
        )
    return pb.GetReportResponse(experiments=experiments, json=json.dumps(document))


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

    def _caller(self, context: grpc.ServicerContext | None) -> str:
        """Who is calling, for the audit log: the caller the token names (the interceptor
        let only named callers through), else anonymous (no tokens configured)."""
        if not self.callers.required or context is None:
            return ANONYMOUS
        metadata = dict(context.invocation_metadata() or ())
        return self.callers.authenticate(metadata.get("authorization")) or ANONYMOUS

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
            user_id=request.user_id,
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
        result = self.service.set_availability(
            tuple(request.item_ids), request.available, actor=self._caller(context)
        )
        return pb.SetAvailabilityResponse(
            changed=result.changed, unknown_item_ids=list(result.unknown_item_ids)
        )

    @translate_errors
    def ReportShown(  # noqa: N802
        self, request: pb.ReportShownRequest, context: grpc.ServicerContext
    ) -> pb.ReportShownResponse:
        now_ms = int(time.time() * 1000)
        erasure_seen = request.erasure_seen if request.HasField("erasure_seen") else None
        impressions = [
            shown_impression(
                recommendation_id=i.recommendation_id,
                user_id=i.user_id,
                item_ids=tuple(i.item_ids),
                timestamp_ms=i.timestamp_ms,
                surface=i.surface,
                experiment=i.experiment,
                variant=i.variant,
                model_version=i.model_version,
                now_ms=now_ms,
                field=f"impressions[{index}]",
                erasure_seen=erasure_seen,
            )
            for index, i in enumerate(request.impressions)
        ]
        accepted, duplicates = self.service.report_shown(impressions)
        return pb.ReportShownResponse(accepted=accepted, duplicates=duplicates)

    @translate_errors
    def GetReport(  # noqa: N802
        self, request: pb.GetReportRequest, context: grpc.ServicerContext
    ) -> pb.GetReportResponse:
        report = self.service.report(request.experiment, request.from_ms, request.to_ms)
        return report_message(report)

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
