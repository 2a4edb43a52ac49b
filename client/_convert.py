"""Translation between the SDK's types and the generated protobuf messages (private).

Request builders validate first (``InvalidInputError`` naming the field), so nothing is
sent for input the contract certainly refuses. Shared by the sync and asyncio clients,
which only differ in how they wait for the RPC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol, TypeVar

from shelfrank.client import _validation as check
from shelfrank.client.types import (
    AvailabilityResult,
    Comparison,
    Contribution,
    DeleteResult,
    Event,
    EventError,
    ExperimentReport,
    Explanation,
    FeatureFilter,
    FeedbackReport,
    Impression,
    Item,
    ModelInfo,
    Rate,
    Reason,
    Recommendations,
    ScoredItem,
    ShownResult,
    Strategy,
    TrackResult,
    User,
    VariantReport,
)
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType
from shelfrank.proto._generated import edge_sync_pb2
from shelfrank.proto._generated import recommender_pb2 as pb

MAX_BATCH_BYTES: Final = 3 * 1024 * 1024
"""Serialized size one Track/Upsert request may reach: below gRPC's common 4 MiB default
receive limit, so large events (long queries) never hit RESOURCE_EXHAUSTED."""
_FIELD_OVERHEAD_BYTES = 6  # tag + length prefix of one repeated element, generously

_PROTO_EVENT_TYPE: Final = MappingProxyType(
    {member: pb.EventType.Value(member.name) for member in EventType}
)
_STRATEGY_BY_PROTO: Final = MappingProxyType(
    {
        pb.TRAINED: Strategy.TRAINED,
        pb.FOLD_IN: Strategy.FOLD_IN,
        pb.FEATURES: Strategy.FEATURES,
        pb.POPULARITY: Strategy.POPULARITY,
        pb.ITEM: Strategy.ITEM,
    }
)


class _SizedMessage(Protocol):
    def ByteSize(self) -> int: ...  # noqa: N802 (protobuf's name)


_Message = TypeVar("_Message", bound=_SizedMessage)
_T = TypeVar("_T")


def feature_filters(field_name: str, filters: object) -> list[FeatureFilter]:
    """FeatureFilter values (the client's and the device's one type for filters)."""
    if isinstance(filters, FeatureFilter) or not isinstance(filters, Iterable):
        raise InvalidInputError(f"{field_name}: expected an iterable of FeatureFilter")
    checked = []
    for index, value in enumerate(filters):
        if not isinstance(value, FeatureFilter):
            raise InvalidInputError(
                f"{field_name}[{index}]: expected a FeatureFilter, got {type(value).__name__}"
            )
        checked.append(value)
    return checked


def _filters(field_name: str, filters: object) -> list[pb.FeatureFilter]:
    return [pb.FeatureFilter(any_of=f.any_of) for f in feature_filters(field_name, filters)]


def recommend_request(
    user_id: str,
    k: int,
    *,
    exclude_item_ids: Iterable[str],
    filters: Iterable[FeatureFilter],
    exclude_features: Iterable[str],
    exclude_seen: bool,
    user_features: Iterable[str],
    diversity: float = 0.0,
    max_per_feature: Mapping[str, int] | None = None,
    exploration: float | None = None,
    exploration_max_age_ms: int | None = None,
    exclude_event_types: Iterable[EventType | str] = (),
    exclude_within_ms: int = 0,
    recommendation_id: str = "",
    explain: bool = False,
) -> pb.RecommendRequest:
    within = check.int64("exclude_within_ms", exclude_within_ms)
    if within < 0:
        raise InvalidInputError(f"exclude_within_ms: must be >= 0, got {within}")
    request = pb.RecommendRequest(
        user_id=check.identifier("user_id", user_id),
        k=check.top_k(k),
        exclude_item_ids=check.identifiers(
            "exclude_item_ids", exclude_item_ids, max_count=check.MAX_CANDIDATES
        ),
        filters=_filters("filters", filters),
        exclude_features=check.tokens("exclude_features", exclude_features),
        # Always sent (the field is optional in proto3) so the server never guesses.
        exclude_seen=check.boolean("exclude_seen", exclude_seen),
        user_features=check.tokens("user_features", user_features),
        max_per_feature=check.feature_caps("max_per_feature", max_per_feature or {}),
        recommendation_id=check.recommendation_id(recommendation_id),
        exclude_event_types=[
            _PROTO_EVENT_TYPE[kind]
            for kind in check.event_types("exclude_event_types", exclude_event_types)
        ],
        exclude_within_ms=within,
    )
    diversity = check.share("diversity", diversity)
    if diversity:
        request.diversity = diversity
    if exploration is not None:
        request.exploration = check.share("exploration", exploration)
    if exploration_max_age_ms is not None:
        age = check.int64("exploration_max_age_ms", exploration_max_age_ms)
        if age < 0:
            raise InvalidInputError(f"exploration_max_age_ms: must be >= 0, got {age}")
        request.exploration_max_age_ms = age
    if check.boolean("explain", explain):
        request.explain = True
    return request


def set_availability_request(item_ids: Iterable[str], available: bool) -> pb.SetAvailabilityRequest:
    return pb.SetAvailabilityRequest(
        item_ids=check.identifiers("item_ids", item_ids, min_count=1, max_count=check.MAX_BATCH),
        available=check.boolean("available", available),
    )


def availability_from(response: pb.SetAvailabilityResponse) -> AvailabilityResult:
    return AvailabilityResult(
        changed=response.changed, unknown_item_ids=tuple(response.unknown_item_ids)
    )


def similar_items_request(
    item_id: str,
    k: int,
    *,
    filters: Iterable[FeatureFilter],
    exclude_features: Iterable[str],
    exclude_item_ids: Iterable[str],
    explain: bool = False,
    user_id: str = "",
) -> pb.SimilarItemsRequest:
    request = pb.SimilarItemsRequest(
        item_id=check.identifier("item_id", item_id),
        k=check.top_k(k),
        filters=_filters("filters", filters),
        exclude_features=check.tokens("exclude_features", exclude_features),
        exclude_item_ids=check.identifiers("exclude_item_ids", exclude_item_ids),
        user_id=check.identifier("user_id", user_id) if user_id != "" else "",
    )
    if check.boolean("explain", explain):
        request.explain = True
    return request


def rank_request(
    user_id: str, item_ids: Iterable[str], *, user_features: Iterable[str], explain: bool = False
) -> pb.RankRequest:
    request = pb.RankRequest(
        user_id=check.identifier("user_id", user_id),
        item_ids=check.identifiers(
            "item_ids", item_ids, min_count=1, max_count=check.MAX_CANDIDATES
        ),
        user_features=check.tokens("user_features", user_features),
    )
    if check.boolean("explain", explain):
        request.explain = True
    return request


def delete_user_request(user_id: str) -> pb.DeleteUserRequest:
    return pb.DeleteUserRequest(user_id=check.identifier("user_id", user_id))


def snapshot_request(user_id: str, have_version: str) -> edge_sync_pb2.GetSnapshotRequest:
    return edge_sync_pb2.GetSnapshotRequest(
        user_id=check.identifier("user_id", user_id),
        have_version=check.utf8_text("have_version", have_version),
    )


_REASON_BY_PROTO: Final = MappingProxyType(
    {
        pb.PERSONALIZED: Reason.PERSONALIZED,
        pb.BECAUSE_HISTORY: Reason.BECAUSE_HISTORY,
        pb.SIMILAR_ITEM: Reason.SIMILAR_ITEM,
        pb.POPULAR: Reason.POPULAR,
        pb.EXPLORATION: Reason.EXPLORATION,
        pb.NEW_ITEM: Reason.NEW_ITEM,
    }
)


def _explanation(item: pb.ScoredItem) -> Explanation | None:
    if not item.HasField("explanation"):
        return None
    found = item.explanation
    return Explanation(
        reason=_REASON_BY_PROTO.get(found.reason, Reason.UNKNOWN),
        contributions=tuple(Contribution(c.source, c.value) for c in found.contributions),
        rest=found.rest,
        because_item_ids=tuple(found.because_item_ids),
    )


def recommendations_from(response: pb.RecommendResponse) -> Recommendations:
    return Recommendations(
        items=tuple(
            ScoredItem(item.item_id, item.score, _explanation(item)) for item in response.items
        ),
        model_version=response.model_version,
        recommendation_id=response.recommendation_id,
        strategy=_STRATEGY_BY_PROTO.get(response.strategy, Strategy.UNKNOWN),
        variant=response.variant,
        experiment=response.experiment,
    )


def event_to_proto(event: Event) -> pb.Event:
    return pb.Event(
        event_id=event.event_id,
        user_id=event.user_id,
        item_id=event.item_id,
        type=_PROTO_EVENT_TYPE[event.type],
        timestamp_ms=event.timestamp_ms,
        session_id=event.session_id,
        query=event.query,
        recommendation_id=event.recommendation_id,
        position=event.position,
    )


def _instances_of(field_name: str, values: object, kind: type[_T]) -> list[_T]:
    """Materialise and type-check the caller's values, so nothing is sent if one is wrong."""
    if isinstance(values, str | bytes | kind) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{field_name}: expected an iterable of {kind.__name__}")
    checked = list(values)
    for index, value in enumerate(checked):
        if not isinstance(value, kind):
            raise InvalidInputError(
                f"{field_name}[{index}]: expected {kind.__name__}, got {type(value).__name__}"
            )
    return checked


def batches(
    messages: Iterable[_Message], *, max_count: int, max_bytes: int
) -> Iterator[tuple[int, list[_Message]]]:
    """Consecutive runs of ``messages`` within both limits, with each run's start offset.

    A message larger than ``max_bytes`` on its own still goes, alone in its batch: the
    server decides whether it is too large.
    """
    batch: list[_Message] = []
    batch_bytes = 0
    offset = 0
    for message in messages:
        size = message.ByteSize() + _FIELD_OVERHEAD_BYTES
        if batch and (len(batch) >= max_count or batch_bytes + size > max_bytes):
            yield offset, batch
            offset += len(batch)
            batch, batch_bytes = [], 0
        batch.append(message)
        batch_bytes += size
    if batch:
        yield offset, batch


def track_requests(
    events: Iterable[Event], erasure_seen: int | None = None
) -> Iterator[tuple[int, pb.TrackRequest]]:
    """Validated eagerly (before any RPC); requests are then built one batch at a time."""
    checked = _instances_of("events", events, Event)
    if erasure_seen is not None:
        check.uint64("erasure_seen", erasure_seen)
    protos = (event_to_proto(event) for event in checked)
    return (
        (offset, pb.TrackRequest(events=batch, erasure_seen=erasure_seen))
        for offset, batch in batches(protos, max_count=check.MAX_BATCH, max_bytes=MAX_BATCH_BYTES)
    )


@dataclass(slots=True)
class TrackTally:
    """Sums the per-batch responses of one ``track`` call into one ``TrackResult``."""

    accepted: int = 0
    duplicates: int = 0
    errors: list[EventError] = field(default_factory=list)

    def add(self, offset: int, response: pb.TrackResponse) -> None:
        """Count one batch; its error indices are shifted to the caller's positions."""
        self.accepted += response.accepted
        self.duplicates += response.duplicates
        self.errors.extend(
            EventError(index=offset + error.index, message=error.message)
            for error in response.errors
        )

    def result(self) -> TrackResult:
        return TrackResult(self.accepted, self.duplicates, tuple(self.errors))


def upsert_items_requests(items: Iterable[Item]) -> Iterator[pb.UpsertItemsRequest]:
    checked = _instances_of("items", items, Item)
    protos = (pb.Item(item_id=item.item_id, features=item.features) for item in checked)
    return (
        pb.UpsertItemsRequest(items=batch)
        for _, batch in batches(protos, max_count=check.MAX_BATCH, max_bytes=MAX_BATCH_BYTES)
    )


def upsert_users_requests(users: Iterable[User]) -> Iterator[pb.UpsertUsersRequest]:
    checked = _instances_of("users", users, User)
    protos = (pb.User(user_id=user.user_id, features=user.features) for user in checked)
    return (
        pb.UpsertUsersRequest(users=batch)
        for _, batch in batches(protos, max_count=check.MAX_BATCH, max_bytes=MAX_BATCH_BYTES)
    )


def delete_result_from(response: pb.DeleteUserResponse) -> DeleteResult:
    return DeleteResult(existed=response.existed, events_deleted=response.events_deleted)


def model_info_from(response: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        model_version=response.model_version,
        trained_at_ms=response.trained_at_ms,
        users=response.users,
        items=response.items,
        stored_events=response.stored_events,
    )


def impression_to_proto(impression: Impression) -> pb.Impression:
    return pb.Impression(
        recommendation_id=impression.recommendation_id,
        user_id=impression.user_id,
        item_ids=impression.item_ids,
        timestamp_ms=impression.timestamp_ms,
        surface=impression.surface,
        experiment=impression.experiment,
        variant=impression.variant,
        model_version=impression.model_version,
    )


def report_shown_requests(
    impressions: Iterable[Impression], erasure_seen: int | None = None
) -> Iterator[pb.ReportShownRequest]:
    """Validated eagerly (before any RPC), then batched like ``track``."""
    checked = _instances_of("impressions", impressions, Impression)
    if erasure_seen is not None:
        check.uint64("erasure_seen", erasure_seen)
    protos = (impression_to_proto(impression) for impression in checked)
    return (
        pb.ReportShownRequest(impressions=batch, erasure_seen=erasure_seen)
        for _, batch in batches(protos, max_count=check.MAX_BATCH, max_bytes=MAX_BATCH_BYTES)
    )


@dataclass(slots=True)
class ShownTally:
    """Sums the per-batch responses of one ``report_shown`` call."""

    accepted: int = 0
    duplicates: int = 0

    def add(self, response: pb.ReportShownResponse) -> None:
        self.accepted += response.accepted
        self.duplicates += response.duplicates

    def result(self) -> ShownResult:
        return ShownResult(self.accepted, self.duplicates)


def shown_impressions(
    recommendations: Recommendations, item_ids: Iterable[str] | None, user_id: str
) -> list[Impression]:
    """What ``shown`` reports: ``item_ids`` (default: all) of a response, labelled as the
    response was; none when nothing was shown."""
    if not isinstance(recommendations, Recommendations):
        raise InvalidInputError(
            f"recommendations: expected Recommendations, got {type(recommendations).__name__}"
        )
    user_id = check.optional_identifier("user_id", user_id)
    served = recommendations.item_ids
    if item_ids is None:
        shown = served
    else:
        shown = check.identifiers("item_ids", item_ids, max_count=check.MAX_SHOWN_ITEMS)
        known = set(served)
        for index, item_id in enumerate(shown):
            if item_id not in known:
                raise InvalidInputError(
                    f"item_ids[{index}]: {item_id!r} is not one of the recommendations"
                )
    if not shown:
        return []
    return [
        Impression(
            recommendations.recommendation_id,
            shown[: check.MAX_SHOWN_ITEMS],
            user_id=user_id,
            surface="recommend",
            experiment=recommendations.experiment,
            variant=recommendations.variant,
            model_version=recommendations.model_version,
        )
    ]


def report_request(experiment: str, from_ms: int, to_ms: int) -> pb.GetReportRequest:
    start, end = check.time_range(from_ms, to_ms)
    return pb.GetReportRequest(
        experiment=check.utf8_text("experiment", experiment), from_ms=start, to_ms=end
    )


def _rate(rate: pb.Rate) -> Rate:
    return Rate(rate.value, rate.low, rate.high)


def _variant_report(variant: pb.VariantReport) -> VariantReport:
    return VariantReport(
        name=variant.name,
        impressions=variant.impressions,
        clicks=variant.clicks,
        carts=variant.carts,
        purchases=variant.purchases,
        dismissals=variant.dismissals,
        ctr=_rate(variant.ctr),
        add_to_cart_rate=_rate(variant.add_to_cart_rate),
        conversion=_rate(variant.conversion),
        dismissal_rate=_rate(variant.dismissal_rate),
    )


def _comparison(comparison: pb.Comparison) -> Comparison:
    return Comparison(
        variant=comparison.variant,
        control=comparison.control,
        metric=comparison.metric,
        difference=comparison.difference,
        low=comparison.low,
        high=comparison.high,
        always_valid_low=comparison.always_valid_low,
        always_valid_high=comparison.always_valid_high,
        p_value=comparison.p_value,
        verdict=comparison.verdict,
    )


def report_from(response: pb.GetReportResponse) -> FeedbackReport:
    return FeedbackReport(
        experiments=tuple(
            ExperimentReport(
                name=experiment.name,
                variants=tuple(_variant_report(v) for v in experiment.variants),
                comparisons=tuple(_comparison(c) for c in experiment.comparisons),
            )
            for experiment in response.experiments
        ),
        json=response.json,
    )
