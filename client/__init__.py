"""Typed Python SDK for the shelfrank recommendation service (gRPC ``shelfrank.v1``).

Usage::

    from shelfrank.client import Client, Event, FeatureFilter, NotFoundError

    with Client("localhost:50051", token="s3cret", timeout=2.0) as client:
        recs = client.recommend("user-42", k=5, filters=[FeatureFilter(["category=shoes"])])
        print(recs.strategy, recs.item_ids)
        client.shown(recs, recs.item_ids[:3], user_id="user-42")  # what the page showed
        result = client.track([
            Event("user-42", recs.item_ids[0], "purchase",
                  recommendation_id=recs.recommendation_id, position=1)
        ])
        print(result.accepted, result.errors)
        print(client.report().json)  # attributed feedback per experiment and variant
        try:
            client.similar_items("no-such-item")
        except NotFoundError as error:
            print(error.code, error.details)

``AsyncClient`` has the same methods as coroutines (``async with AsyncClient(...)``);
``tests/test_error_root.py`` keeps the two surfaces equal, parameter for parameter.

Errors: all derive from ``shelfrank.core.errors.ShelfrankError``:
``InvalidInputError`` (input refused before any RPC, the message names the field), a
``ServiceError`` subclass per gRPC status, ``ClientClosedError`` / ``WrongEventLoopError``
(misuse, no RPC) and ``StorageError`` (``fetch_snapshot`` cannot write its files); raw
grpc errors, OS errors and protobuf types never reach the caller.

Retries, one policy in one place: the channel. An RPC failing with UNAVAILABLE (server
down, restarting, refusing connections) is retried by gRPC with exponential backoff
(a random wait of up to 0.1 s, the bound doubling per attempt up to 2 s), at most
``max_attempts`` attempts in all (default 5, at most 5), for every method of both
services (``Recommender`` and ``EdgeSync.GetSnapshot``), all within the call's one
deadline. Every method is safe to repeat (see ``_channel.service_config``). No other
status is retried and nothing above the channel retries: ``Client``/``AsyncClient``
methods send each request once, and ``shelfrank.edge``'s ``sync()`` makes each RPC once
too, reporting ``offline`` when the server stays unreachable; calling ``sync()`` again
later retries the round. So one RPC makes at most ``max_attempts`` attempts (a
``track`` of more than one batch sends one RPC per batch), and a sync against a server
that is down makes ``max_attempts`` in all (``tests/test_retry_policy.py`` counts them
against a server that answers UNAVAILABLE).

Depends on grpcio/protobuf only (plus the dependency-free ``shelfrank.core.errors`` and
``shelfrank.core.events``): importing it does not load numpy.
"""

from shelfrank.client.aio import AsyncClient
from shelfrank.client.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    ClientClosedError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServiceError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    WrongEventLoopError,
)
from shelfrank.client.protocol import AsyncRecommender, Recommender
from shelfrank.client.sync import Client
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
    SnapshotInfo,
    Strategy,
    TrackResult,
    User,
    VariantReport,
)
from shelfrank.core.errors import InvalidInputError, ShelfrankError
from shelfrank.core.events import EventType

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "AsyncClient",
    "AsyncRecommender",
    "AvailabilityResult",
    "CancelledError",
    "Client",
    "ClientClosedError",
    "Comparison",
    "Contribution",
    "DataLossError",
    "DeadlineExceededError",
    "DeleteResult",
    "Event",
    "EventError",
    "EventType",
    "ExperimentReport",
    "Explanation",
    "FailedPreconditionError",
    "FeatureFilter",
    "FeedbackReport",
    "Impression",
    "InternalError",
    "InvalidArgumentError",
    "InvalidInputError",
    "Item",
    "ModelInfo",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "Rate",
    "Reason",
    "Recommendations",
    "Recommender",
    "ResourceExhaustedError",
    "ScoredItem",
    "ServiceError",
    "ShelfrankError",
    "ShownResult",
    "SnapshotInfo",
    "Strategy",
    "TrackResult",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "User",
    "VariantReport",
    "WrongEventLoopError",
]
