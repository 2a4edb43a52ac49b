"""Plain values the SDK takes and returns: frozen, typed, free of grpc and protobuf.

Kept transport-free so the edge SDK can reuse the result types without a channel.
Values you build (``Event``, ``Item``, ``User``, ``FeatureFilter``) are checked when
constructed and raise ``InvalidInputError`` naming the field, so a bad value fails where
it is written rather than deep inside a batched RPC. They accept any iterable of str for
their tuple fields (stored as tuples, so the values stay hashable and immutable).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from shelfrank.client import _validation as check
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType, new_event_id

__all__ = [
    "AvailabilityResult",
    "Comparison",
    "Contribution",
    "DeleteResult",
    "Event",
    "EventError",
    "EventType",
    "ExperimentReport",
    "Explanation",
    "FeatureFilter",
    "FeedbackReport",
    "Impression",
    "Item",
    "ModelInfo",
    "Rate",
    "Reason",
    "Recommendations",
    "ScoredItem",
    "ShownResult",
    "Strategy",
    "TrackResult",
    "User",
    "VariantReport",
]


class Strategy(enum.StrEnum):
    """How the service represented the user (or item) for a response."""

    TRAINED = "trained"
    """The user's trained vector, refined by newer events."""
    FOLD_IN = "fold_in"
    """Unknown to the model; folded in from tracked events."""
    FEATURES = "features"
    """Unknown, no events; composed from profile features."""
    POPULARITY = "popularity"
    """Nothing known about the user."""
    ITEM = "item"
    """``similar_items``: by the item's vector."""
    UNKNOWN = "unknown"
    """Unspecified, or a strategy added by a newer server: the items are still valid."""


class Reason(enum.StrEnum):
    """Why an item was recommended (``Explanation.reason``)."""

    PERSONALIZED = "personalized"
    """The user's own vector (trained, or composed from profile features)."""
    BECAUSE_HISTORY = "because_history"
    """Mostly what the user did: folded-in events, item-to-item votes, the session."""
    SIMILAR_ITEM = "similar_item"
    """``similar_items``: close to the given item."""
    POPULAR = "popular"
    """Nothing is known of the user: popularity."""
    EXPLORATION = "exploration"
    """An exploration slot (a new or little-shown item)."""
    NEW_ITEM = "new_item"
    """An item the model was not trained with, scored by its features."""
    UNKNOWN = "unknown"
    """Unspecified, or a reason added by a newer server."""


@dataclass(frozen=True, slots=True)
class Contribution:
    """One part of a score. ``source``: ``bias:user``, ``bias:item``, ``item:<token>``,
    ``user:<token>``, ``history:<item_id>`` or ``signal:<name>``."""

    source: str
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """Why an item is in a list: its ``contributions`` (largest in size first) plus
    ``rest`` (those left out) sum to its score; ``because_item_ids`` are up to three items
    of the user's history that support it most."""

    reason: Reason
    contributions: tuple[Contribution, ...] = ()
    rest: float = 0.0
    because_item_ids: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return float(sum(c.value for c in self.contributions) + self.rest)


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float
    """Higher is better; comparable only within one response."""
    explanation: Explanation | None = None
    """Set when the request asked to ``explain``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AvailabilityResult:
    """What ``set_availability`` did: how many items changed, and the ids the catalogue
    does not hold (nothing was done for them)."""

    changed: int
    unknown_item_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Recommendations:
    """Ranked items plus what is needed to attribute feedback to this response."""

    items: tuple[ScoredItem, ...]
    model_version: str
    recommendation_id: str
    """Unique per response, for attributing later feedback to it (``Event``'s
    ``recommendation_id``, ``Client.shown``)."""
    strategy: Strategy
    variant: str = ""
    """The A/B experiment variant that served the response; empty when none applied."""
    experiment: str = ""
    """The experiment that chose ``variant``; empty: none."""

    @property
    def item_ids(self) -> tuple[str, ...]:
        """The ids in ranked order, for callers that do not need scores."""
        return tuple(item.item_id for item in self.items)


@dataclass(frozen=True, slots=True, init=False)
class FeatureFilter:
    """Passes items having at least one of ``any_of`` (tokens like ``category=shoes``)."""

    any_of: tuple[str, ...]

    def __init__(self, any_of: Iterable[str]) -> None:
        tokens = check.tokens("any_of", any_of)
        if not tokens:
            # An empty filter would match nothing, which is never what a caller means
            # (and is easily mistaken for "no constraint").
            raise InvalidInputError("any_of: a filter needs at least one feature token")
        object.__setattr__(self, "any_of", tokens)


def _event_type(value: object) -> EventType:
    if isinstance(value, EventType):
        return value
    if isinstance(value, str):
        try:
            return EventType.parse(value)
        except InvalidInputError:
            allowed = ", ".join(member.label for member in EventType)
            raise InvalidInputError(
                f"type: unknown event type {value!r} (expected one of {allowed})"
            ) from None
    raise InvalidInputError(f"type: expected an EventType or its label, got {type(value).__name__}")


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """One thing a shopper did, ready for ``Client.track``.

    ``type`` accepts an ``EventType`` or its label (``"purchase"``, ``"ADD_TO_CART"``)
    and is always stored as an ``EventType``. ``event_id`` defaults to a fresh random id
    made *here*, at construction: keep the ``Event`` objects to retry a failed ``track``
    and the server will count the resent ones as duplicates instead of storing them
    twice. ``timestamp_ms`` is unix milliseconds; 0 lets the server use "now".

    ``recommendation_id`` (keyword) names the response the event answers
    (``Recommendations.recommendation_id``) and ``position`` the item's 1-based place in
    it (0: unknown). An event carrying the id counts for that response; one without it
    counts for the latest response that showed the item to the user within the server's
    attribution window (24 h by default).
    """

    user_id: str
    item_id: str
    type: EventType
    event_id: str
    timestamp_ms: int
    session_id: str
    query: str
    """The search text, for ``EventType.SEARCH``."""
    recommendation_id: str
    """The response the event answers; empty: none."""
    position: int
    """The item's 1-based position in that response; 0: unknown."""

    def __init__(
        self,
        user_id: str,
        item_id: str,
        type: EventType | str = EventType.VIEW,
        event_id: str | None = None,
        timestamp_ms: int = 0,
        session_id: str = "",
        query: str = "",
        *,
        recommendation_id: str = "",
        position: int = 0,
    ) -> None:
        object.__setattr__(self, "user_id", check.identifier("user_id", user_id))
        object.__setattr__(self, "item_id", check.identifier("item_id", item_id))
        object.__setattr__(self, "type", _event_type(type))
        object.__setattr__(
            self,
            "event_id",
            new_event_id() if event_id is None else check.identifier("event_id", event_id),
        )
        object.__setattr__(self, "timestamp_ms", check.int64("timestamp_ms", timestamp_ms))
        object.__setattr__(self, "session_id", check.optional_identifier("session_id", session_id))
        object.__setattr__(self, "query", check.utf8_text("query", query))
        object.__setattr__(self, "recommendation_id", check.recommendation_id(recommendation_id))
        object.__setattr__(self, "position", check.position("position", position))


@dataclass(frozen=True, slots=True)
class EventError:
    """Why one event of a ``track`` call was refused."""

    index: int
    """Position in the sequence given to ``track`` (not in the RPC batch)."""
    message: str


@dataclass(frozen=True, slots=True)
class TrackResult:
    """Outcome of ``track``: refused events are listed, the others were stored."""

    accepted: int
    """Newly stored."""
    duplicates: int
    """Already stored under the same event_id (e.g. a retry): nothing changed."""
    errors: tuple[EventError, ...]


@dataclass(frozen=True, slots=True, init=False)
class Item:
    """A catalogue item and its feature tokens (``"category=shoes"``)."""

    item_id: str
    features: tuple[str, ...]

    def __init__(self, item_id: str, features: Iterable[str] = ()) -> None:
        object.__setattr__(self, "item_id", check.identifier("item_id", item_id))
        object.__setattr__(self, "features", check.tokens("features", features))


@dataclass(frozen=True, slots=True, init=False)
class User:
    """A user profile: feature tokens used while the model does not know the user."""

    user_id: str
    features: tuple[str, ...]

    def __init__(self, user_id: str, features: Iterable[str] = ()) -> None:
        object.__setattr__(self, "user_id", check.identifier("user_id", user_id))
        object.__setattr__(self, "features", check.tokens("features", features))


@dataclass(frozen=True, slots=True)
class DeleteResult:
    existed: bool
    events_deleted: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """The serving model's version and the event store's counts."""

    model_version: str
    trained_at_ms: int
    users: int
    """Users the serving model knows."""
    items: int
    """Items the serving model can recommend."""
    stored_events: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotInfo:
    """What :meth:`Client.fetch_snapshot` downloaded (edge devices).

    ``base_version`` empty: a full snapshot; else a delta from that version.
    ``user_erased``: the server erased the user and the user has not come back since;
    nothing was downloaded.
    ``erasure_id``: the user's latest erasure on the server (0: never erased), also after
    the user came back. A device holding data from before that erasure must purge it,
    once: ids grow with every erasure.
    """

    version: str
    base_version: str
    model_version: str
    user_erased: bool
    payload_bytes: int
    erasure_id: int = 0


@dataclass(frozen=True, slots=True, init=False)
class Impression:
    """A list put in front of a user, for ``Client.report_shown``: ``item_ids`` in shown
    order (1..1,000). ``recommendation_id`` is the response's id when the list came from
    one (the shown part then replaces the served list in attribution), else an id of the
    caller's (1..128 characters). ``timestamp_ms`` 0: the server's "now"; ``surface``:
    ``recommend``, ``similar``, ``rank`` or ``device``. The experiment, variant and model
    version are the response's (or the device's assignment).
    """

    recommendation_id: str
    item_ids: tuple[str, ...]
    user_id: str
    """Empty: anonymous."""
    timestamp_ms: int
    surface: str
    experiment: str
    variant: str
    model_version: str

    def __init__(
        self,
        recommendation_id: str,
        item_ids: Iterable[str],
        *,
        user_id: str = "",
        timestamp_ms: int = 0,
        surface: str = "device",
        experiment: str = "",
        variant: str = "",
        model_version: str = "",
    ) -> None:
        object.__setattr__(
            self,
            "recommendation_id",
            check.recommendation_id(recommendation_id, required=True),
        )
        object.__setattr__(
            self,
            "item_ids",
            check.identifiers("item_ids", item_ids, min_count=1, max_count=check.MAX_SHOWN_ITEMS),
        )
        object.__setattr__(self, "user_id", check.optional_identifier("user_id", user_id))
        stamp = check.int64("timestamp_ms", timestamp_ms)
        if stamp < 0:
            raise InvalidInputError(f"timestamp_ms: must be >= 0, got {stamp}")
        object.__setattr__(self, "timestamp_ms", stamp)
        object.__setattr__(self, "surface", check.surface(surface))
        for name, value in (
            ("experiment", experiment),
            ("variant", variant),
            ("model_version", model_version),
        ):
            object.__setattr__(self, name, check.optional_identifier(name, value))


@dataclass(frozen=True, slots=True)
class ShownResult:
    """Outcome of ``report_shown``/``shown``."""

    accepted: int
    """Newly stored impressions."""
    duplicates: int
    """Recommendation ids reported before (e.g. a resend): nothing changed."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A proportion (impressions with at least one such event) and its 95% interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantReport:
    """One variant's attributed feedback: counts of impressions and of attributed events
    (``clicks`` are views), and the rates per impression."""

    name: str
    impressions: int
    clicks: int
    carts: int
    purchases: int
    dismissals: int
    ctr: Rate
    add_to_cart_rate: Rate
    conversion: Rate
    dismissal_rate: Rate


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """A variant against its experiment's control on one ``metric`` (``ctr`` or
    ``conversion``): ``difference`` is variant minus control, ``low``/``high`` its 95%
    interval, ``always_valid_*`` a confidence sequence (valid however often the report is
    read) with its ``p_value``; ``verdict``: ``ahead``, ``behind`` or ``no difference
    yet``."""

    variant: str
    control: str
    metric: str
    difference: float
    low: float
    high: float
    always_valid_low: float
    always_valid_high: float
    p_value: float
    verdict: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentReport:
    name: str
    variants: tuple[VariantReport, ...]
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackReport:
    """What ``Client.report`` returns: per experiment and variant, plus ``json``, the
    whole report (per model version and per day too) as ``shelfrank report --json``
    writes it."""

    experiments: tuple[ExperimentReport, ...]
    json: str
