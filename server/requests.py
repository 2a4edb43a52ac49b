"""Typed requests of the service layer and their validation.

Everything that reaches the service has passed through here: limits are the public
contract's (see proto/shelfrank/v1/recommender.proto). Errors name the field.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from shelfrank.core.errors import InvalidInputError, ShelfrankError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.core.ids import CONTROL_CHARACTERS, MAX_ID_BYTES, has_control_characters
from shelfrank.core.ranking import Steering
from shelfrank.server.storage import Impression, ImpressionKind

MAX_K = 1000
MAX_BATCH = 10_000
MAX_LIST = 10_000
MAX_QUERY_CHARS = 1024
MAX_POSITION = 2**31 - 1  # the proto's int32, and the stores' integer column
MAX_FILTERS = 100
MAX_TOKEN_BYTES = 512
MAX_RECOMMENDATION_ID = 128
MAX_FUTURE_MS = 24 * 3600 * 1000  # clocks drift; a day ahead is "far in the future"


class NotFoundError(ShelfrankError):
    """The named entity does not exist (gRPC NOT_FOUND)."""


class FailedPreconditionError(ShelfrankError):
    """The server is not set up for the call (gRPC FAILED_PRECONDITION), e.g. a report
    from a server that records no impressions."""


class TooLargeError(InvalidInputError):
    """A request exceeds a size limit (gRPC RESOURCE_EXHAUSTED)."""


class RateLimitedError(ShelfrankError):
    """Too many events from one user or one connection (gRPC RESOURCE_EXHAUSTED): nothing
    of the request was stored; send it again later."""


@dataclass(frozen=True)
class EventLimits:
    """Token buckets on tracked events (0 switches a limit off). A person does not view
    50 items a second for long; a connection may carry a whole backend's traffic."""

    per_user_rate: float = 50.0
    per_user_burst: float = 10_000.0  # one full batch: a device syncing a long offline backlog
    per_connection_rate: float = 100_000.0
    per_connection_burst: float = 50_000.0

    def __post_init__(self) -> None:
        for name in ("per_user_rate", "per_user_burst", "per_connection_rate",
                     "per_connection_burst"):  # fmt: skip
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name}: must be >= 0, got {getattr(self, name)}")


def check_id(value: str, field: str) -> str:
    if not value:
        raise InvalidInputError(f"{field}: must not be empty")
    if has_control_characters(value):
        raise InvalidInputError(f"{field}: must not contain control characters")
    # ASCII strings have as many bytes as characters: skip the encode on the common path.
    if len(value) > MAX_ID_BYTES // 4 and len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidInputError(f"{field}: longer than {MAX_ID_BYTES} bytes")
    return value


def check_k(k: int, field: str = "k") -> int:
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"{field}: must be between 1 and {MAX_K}, got {k}")
    return k


def check_list(values: Sequence[str], field: str, *, limit: int = MAX_LIST) -> tuple[str, ...]:
    if len(values) > limit:
        raise TooLargeError(f"{field}: at most {limit} entries, got {len(values)}")
    for index, value in enumerate(values):
        check_id(value, f"{field}[{index}]")
    return tuple(values)


def check_tokens(values: Sequence[str], field: str) -> tuple[str, ...]:
    if len(values) > MAX_LIST:
        raise TooLargeError(f"{field}: at most {MAX_LIST} entries, got {len(values)}")
    for index, token in enumerate(values):
        column, sep, value = token.partition("=")
        if not sep or not column or not value:
            raise InvalidInputError(f"{field}[{index}]: {token!r} is not a 'column=value' token")
        if len(token.encode("utf-8")) > MAX_TOKEN_BYTES:
            raise InvalidInputError(f"{field}[{index}]: longer than {MAX_TOKEN_BYTES} bytes")
        if has_control_characters(token):
            raise InvalidInputError(f"{field}[{index}]: must not contain control characters")
    return tuple(values)


def check_filters(filters: Sequence[Sequence[str]], exclude_features: Sequence[str]) -> None:
    if len(filters) > MAX_FILTERS:
        raise TooLargeError(f"filters: at most {MAX_FILTERS} filters, got {len(filters)}")
    for index, any_of in enumerate(filters):
        if not any_of:
            raise InvalidInputError(f"filters[{index}].any_of: must not be empty")
        check_tokens(any_of, f"filters[{index}].any_of")
    check_tokens(exclude_features, "exclude_features")


def check_recommendation_id(value: str) -> str:
    """A caller's id for a list (empty: the server makes one)."""
    if value:
        check_id(value, "recommendation_id")
        if len(value) > MAX_RECOMMENDATION_ID:
            raise InvalidInputError(
                f"recommendation_id: at most {MAX_RECOMMENDATION_ID} characters, got {len(value)}"
            )
    return value


@dataclass(frozen=True)
class SeenFilter:
    """Items the user had one of ``event_types`` with (``within_ms`` ago at most; 0: any
    time) are skipped, besides purchases and dismissals under ``exclude_seen``."""

    event_types: frozenset[EventType] = frozenset()
    within_ms: int = 0

    def __post_init__(self) -> None:
        if self.within_ms < 0:
            raise InvalidInputError(f"exclude_within_ms: must be >= 0, got {self.within_ms}")


NO_SEEN_FILTER = SeenFilter()


@dataclass(frozen=True)
class RecommendQuery:
    user_id: str
    k: int
    exclude_item_ids: tuple[str, ...] = ()
    filters: tuple[tuple[str, ...], ...] = ()
    exclude_features: tuple[str, ...] = ()
    exclude_seen: bool = True
    user_features: tuple[str, ...] = ()
    # Steering (core/ranking.py); None: the server's default.
    diversity: float = 0.0
    max_per_feature: tuple[tuple[str, int], ...] = ()
    exploration: float | None = None
    exploration_max_age_ms: int | None = None
    recommendation_id: str = ""
    seen: SeenFilter = NO_SEEN_FILTER
    explain: bool = False

    def __post_init__(self) -> None:
        check_id(self.user_id, "user_id")
        check_k(self.k)
        check_list(self.exclude_item_ids, "exclude_item_ids")
        check_filters(self.filters, self.exclude_features)
        check_tokens(self.user_features, "user_features")
        check_recommendation_id(self.recommendation_id)
        if self.steers:
            self.steering(Steering())  # every steering field is checked here, named

    @property
    def steers(self) -> bool:
        """Whether the request sets any steering field (most do not: no work then)."""
        return bool(
            self.diversity
            or self.max_per_feature
            or self.exploration is not None
            or self.exploration_max_age_ms is not None
        )

    def steering(self, default: Steering) -> Steering:
        """The request's steering, the server's ``default`` where it leaves a field out."""
        if not self.steers:
            return default
        return Steering(
            diversity=self.diversity,
            max_per_feature=self.max_per_feature,
            exploration=default.exploration if self.exploration is None else self.exploration,
            exploration_max_age_ms=(
                default.exploration_max_age_ms
                if self.exploration_max_age_ms is None
                else self.exploration_max_age_ms
            ),
        )


@dataclass(frozen=True)
class SimilarQuery:
    item_id: str
    k: int
    filters: tuple[tuple[str, ...], ...] = ()
    exclude_features: tuple[str, ...] = ()
    exclude_item_ids: tuple[str, ...] = ()
    explain: bool = False
    user_id: str = ""  # the shopper looking, if known: experiments and attribution only

    def __post_init__(self) -> None:
        check_id(self.item_id, "item_id")
        if self.user_id:
            check_id(self.user_id, "user_id")
        check_k(self.k)
        check_filters(self.filters, self.exclude_features)
        check_list(self.exclude_item_ids, "exclude_item_ids")


@dataclass(frozen=True)
class RankQuery:
    user_id: str
    item_ids: tuple[str, ...]
    user_features: tuple[str, ...] = ()
    explain: bool = False

    def __post_init__(self) -> None:
        check_id(self.user_id, "user_id")
        if not self.item_ids:
            raise InvalidInputError("item_ids: must not be empty")
        check_list(self.item_ids, "item_ids")
        check_tokens(self.user_features, "user_features")


class IncomingEvent(NamedTuple):
    """An event as received; :func:`validate_event` turns it into a storable one (a named
    tuple: Track builds one per event)."""

    event_id: str
    user_id: str
    item_id: str
    event_type: int
    timestamp_ms: int = 0
    session_id: str = ""
    query: str = ""
    recommendation_id: str = ""
    position: int = 0


# IncomingEvent's fields as a plain tuple: Track builds one per event straight from the
# message (in C, through an attrgetter), so the hot path never runs Python per event.
EventRow = tuple[str, str, str, int, int, str, str, str, int]

_EVENT_TYPES = {int(kind): kind for kind in EventType}
_stored_event = partial(tuple.__new__, StoredEvent)  # a StoredEvent from a full row, in C


def validate_event(event: IncomingEvent, now_ms: int | None = None) -> StoredEvent:
    """A storable event, or InvalidInputError naming the field."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    check_id(event.event_id, "event_id")
    check_id(event.user_id, "user_id")
    check_id(event.item_id, "item_id")
    kind = _EVENT_TYPES.get(event.event_type)
    if kind is None:
        raise InvalidInputError(f"type: unknown event type {event.event_type}")
    if event.timestamp_ms < 0:
        raise InvalidInputError(f"timestamp_ms: must be >= 0, got {event.timestamp_ms}")
    if event.timestamp_ms > now + MAX_FUTURE_MS:
        raise InvalidInputError("timestamp_ms: more than a day in the future")
    if event.session_id:
        check_id(event.session_id, "session_id")
    if len(event.query) > MAX_QUERY_CHARS:
        raise InvalidInputError(f"query: longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in event.query:  # free text, but no store's text can hold NUL (PostgreSQL's)
        raise InvalidInputError("query: must not contain the NUL character")
    check_recommendation_id(event.recommendation_id)
    if not 0 <= event.position <= MAX_POSITION:
        raise InvalidInputError(
            f"position: must be between 0 and {MAX_POSITION}, got {event.position}"
        )
    return StoredEvent(
        event_id=event.event_id,
        user_id=event.user_id,
        item_id=event.item_id,
        event_type=kind,
        timestamp_ms=event.timestamp_ms or now,
        session_id=event.session_id,
        query=event.query,
        recommendation_id=event.recommendation_id,
        position=event.position,
    )


def validate_events(
    events: Sequence[EventRow], now_ms: int
) -> tuple[list[StoredEvent], list[tuple[int, str]]]:
    """Storable events and (position, reason) for each refused one.

    ``events`` are IncomingEvents or rows of the same fields. Same outcome as
    :func:`validate_event` on each event; a batch whose every field passes is checked and
    converted column by column at C speed (the ingest hot path), any other batch event by
    event to name each problem."""
    if not events:
        return [], []
    event_ids, user_ids, item_ids, types, stamps, sessions, queries, recommendations, positions = (
        zip(*events, strict=True)
    )
    ids = [
        *event_ids,
        *user_ids,
        *item_ids,
        *(s for s in sessions if s),
        *(r for r in recommendations if r),
    ]
    clean = (
        min(map(len, ids)) >= 1
        # At most 4 UTF-8 bytes a character: short enough ids cannot exceed the byte limit.
        and max(map(len, ids)) <= MAX_ID_BYTES // 4
        and CONTROL_CHARACTERS.search(" ".join(ids)) is None
        and set(types) <= _EVENT_TYPES.keys()
        and min(stamps) >= 0
        and max(stamps) <= now_ms + MAX_FUTURE_MS
        and max(map(len, queries)) <= MAX_QUERY_CHARS
        and "\x00" not in "".join(queries)
        and min(positions) >= 0
        and max(positions) <= MAX_POSITION
    )
    if clean:
        kinds = map(_EVENT_TYPES.__getitem__, types)
        if 0 in stamps:  # no timestamp given: now
            stamps = tuple(stamp or now_ms for stamp in stamps)
        columns = zip(
            event_ids,
            user_ids,
            item_ids,
            kinds,
            stamps,
            sessions,
            queries,
            recommendations,
            positions,
            strict=True,
        )
        return list(map(_stored_event, columns)), []
    valid: list[StoredEvent] = []
    errors: list[tuple[int, str]] = []
    for index, event in enumerate(events):
        try:
            valid.append(validate_event(IncomingEvent._make(event), now_ms))
        except InvalidInputError as exc:
            errors.append((index, str(exc)))
    return valid, errors


SURFACES = ("recommend", "similar", "rank", "device")
MAX_SHOWN_ITEMS = 1_000


def shown_impression(
    *,
    recommendation_id: str,
    user_id: str,
    item_ids: Sequence[str],
    timestamp_ms: int,
    surface: str,
    experiment: str,
    variant: str,
    model_version: str,
    now_ms: int,
    field: str = "impression",
    erasure_seen: int | None = None,
) -> Impression:
    """An impression a caller or device reports shown, or InvalidInputError naming the
    field (``field`` prefixes the names, e.g. ``impressions[3]``)."""
    if not recommendation_id:
        raise InvalidInputError(f"{field}.recommendation_id: must not be empty")
    try:
        check_recommendation_id(recommendation_id)
        if user_id:
            check_id(user_id, "user_id")
        if not item_ids:
            raise InvalidInputError("item_ids: must not be empty")
        if len(item_ids) > MAX_SHOWN_ITEMS:
            raise TooLargeError(f"item_ids: at most {MAX_SHOWN_ITEMS}, got {len(item_ids)}")
        for index, item in enumerate(item_ids):
            check_id(item, f"item_ids[{index}]")
        if timestamp_ms < 0:
            raise InvalidInputError(f"timestamp_ms: must be >= 0, got {timestamp_ms}")
        if timestamp_ms > now_ms + MAX_FUTURE_MS:
            raise InvalidInputError("timestamp_ms: more than a day in the future")
        surface = surface or "device"
        if surface not in SURFACES:
            raise InvalidInputError(f"surface: one of {', '.join(SURFACES)}, got {surface!r}")
        for name, value in (
            ("experiment", experiment),
            ("variant", variant),
            ("model_version", model_version),
        ):
            if value:
                check_id(value, name)
    except InvalidInputError as exc:
        raise type(exc)(f"{field}.{exc}") from None
    return Impression(
        recommendation_id=recommendation_id,
        kind=ImpressionKind.SHOWN,
        user_id=user_id,
        time_ms=timestamp_ms or now_ms,
        surface=surface,
        experiment=experiment,
        variant=variant,
        model_version=model_version,
        item_ids=tuple(item_ids),
        erasure_seen=erasure_seen,
    )
