"""The blocking client: one gRPC channel, typed methods, shelfrank errors only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc

from shelfrank.client import _convert
from shelfrank.client._channel import ChannelOption, channel_settings
from shelfrank.client._snapshot import METHOD as SNAPSHOT_METHOD
from shelfrank.client._snapshot import SnapshotDownload, destination_folder
from shelfrank.client.errors import ClientClosedError, from_rpc_error
from shelfrank.client.types import (
    AvailabilityResult,
    DeleteResult,
    Event,
    EventType,
    FeatureFilter,
    FeedbackReport,
    Impression,
    Item,
    ModelInfo,
    Recommendations,
    ShownResult,
    SnapshotInfo,
    TrackResult,
    User,
)
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated.edge_sync_pb2_grpc import EdgeSyncStub
from shelfrank.proto._generated.recommender_pb2_grpc import RecommenderStub

__all__ = ["Client"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class Client:
    """Blocking client for a shelfrank server; thread-safe, reuse one per process.

    ``target`` is ``host:port`` (a DNS name may resolve to several replicas) or a list of
    replicas' ``ip:port``; calls go round robin over the replicas. Every call has a
    deadline: its ``timeout`` argument or the client's ``timeout`` (seconds), covering
    retries too. An RPC failing with
    UNAVAILABLE is retried by the channel, at most ``max_attempts`` attempts in all (1..5)
    with exponential backoff; no other status is retried, and nothing above the channel
    retries (the one retry policy, see the package docstring). ``token`` is sent as
    ``authorization: Bearer <token>`` on every call (in clear text unless ``tls=True``;
    ``root_certificates`` are PEM roots, else the system's). ``options`` are extra gRPC channel
    arguments; one named like ours (e.g. ``grpc.service_config``) replaces ours.

    Errors: ``InvalidInputError`` (naming the field) for input refused before any RPC,
    a ``ServiceError`` subclass per gRPC status otherwise.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 5.0,
        tls: bool = False,
        root_certificates: bytes | None = None,
        max_attempts: int = 5,
        options: Sequence[ChannelOption] = (),
    ) -> None:
        self._settings = channel_settings(
            target,
            token=token,
            timeout=timeout,
            tls=tls,
            root_certificates=root_certificates,
            max_attempts=max_attempts,
            options=options,
        )
        settings = self._settings
        if settings.credentials is None:
            self._channel = grpc.insecure_channel(settings.target, options=settings.options)
        else:
            self._channel = grpc.secure_channel(
                settings.target, settings.credentials, options=settings.options
            )
        self._stub = RecommenderStub(self._channel)
        self._edge_stub = EdgeSyncStub(self._channel)
        self._closed = False

    def _call(
        self,
        method: str,
        rpc: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        """Make one RPC with its deadline and metadata; translate any gRPC failure."""
        deadline = self._settings.timeout_for(timeout)
        if self._closed:
            raise ClientClosedError(f"{method}: the client is closed")
        try:
            return rpc(request, timeout=deadline, metadata=self._settings.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error, method=method) from error
        except ValueError:  # grpc's "Cannot invoke RPC on closed channel!"
            if not self._closed:
                raise
            raise ClientClosedError(f"{method}: the client is closed") from None

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        exclude_item_ids: Iterable[str] = (),
        filters: Iterable[FeatureFilter] = (),
        exclude_features: Iterable[str] = (),
        exclude_seen: bool = True,
        user_features: Iterable[str] = (),
        diversity: float = 0.0,
        max_per_feature: Mapping[str, int] | None = None,
        exploration: float | None = None,
        exploration_max_age_ms: int | None = None,
        exclude_event_types: Iterable[EventType | str] = (),
        exclude_within_ms: int = 0,
        recommendation_id: str = "",
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recommendations:
        """Top-``k`` items for a user; an unknown user gets cold-start results, not an error.

        Every filter must pass (each needs one of its tokens); items with any of
        ``exclude_features`` are skipped; ``exclude_seen`` skips purchased and dismissed
        items; ``user_features`` describe a user the model does not know yet.
        """
        request = _convert.recommend_request(
            user_id,
            k,
            exclude_item_ids=exclude_item_ids,
            filters=filters,
            exclude_features=exclude_features,
            exclude_seen=exclude_seen,
            user_features=user_features,
            diversity=diversity,
            max_per_feature=max_per_feature,
            exploration=exploration,
            exploration_max_age_ms=exploration_max_age_ms,
            exclude_event_types=exclude_event_types,
            exclude_within_ms=exclude_within_ms,
            recommendation_id=recommendation_id,
            explain=explain,
        )
        response = self._call("Recommend", self._stub.Recommend, request, timeout)
        return _convert.recommendations_from(response)

    def similar_items(
        self,
        item_id: str,
        k: int = 10,
        *,
        filters: Iterable[FeatureFilter] = (),
        exclude_features: Iterable[str] = (),
        exclude_item_ids: Iterable[str] = (),
        explain: bool = False,
        user_id: str = "",
        timeout: float | None = None,
    ) -> Recommendations:
        """Items most like ``item_id``; ``NotFoundError`` if the service does not know it.
        ``user_id``, the shopper looking (optional), does not change the ranking unless an
        experiment runs on surface ``similar``; it lets feedback be attributed to the
        response by the window rule, and assigns that experiment's variant."""
        request = _convert.similar_items_request(
            item_id,
            k,
            filters=filters,
            exclude_features=exclude_features,
            exclude_item_ids=exclude_item_ids,
            explain=explain,
            user_id=user_id,
        )
        response = self._call("SimilarItems", self._stub.SimilarItems, request, timeout)
        return _convert.recommendations_from(response)

    def rank(
        self,
        user_id: str,
        item_ids: Iterable[str],
        *,
        user_features: Iterable[str] = (),
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recommendations:
        """The 1..10,000 candidate ``item_ids`` in ranked order; unknown items rank last."""
        request = _convert.rank_request(
            user_id, item_ids, user_features=user_features, explain=explain
        )
        response = self._call("Rank", self._stub.Rank, request, timeout)
        return _convert.recommendations_from(response)

    def track(
        self,
        events: Iterable[Event],
        *,
        timeout: float | None = None,
        erasure_seen: int | None = None,
    ) -> TrackResult:
        """Store behaviour events; refused ones are reported by position, not raised.

        Any number of events: they are sent in batches of at most 10,000 (and 3 MiB),
        ``timeout`` applying to each batch, and the results are summed, with error
        indices counting from the start of ``events``. No events, no RPC. If a batch
        fails, the earlier batches are stored; retrying the call with the same ``Event``
        objects is safe, as their ids make the stored ones count as duplicates.

        ``erasure_seen`` (devices): the latest ``SnapshotInfo.erasure_id`` the caller has
        purged for; events of a user erased since are refused with an error each.
        """
        tally = _convert.TrackTally()
        for offset, request in _convert.track_requests(events, erasure_seen):
            tally.add(offset, self._call("Track", self._stub.Track, request, timeout))
        return tally.result()

    def report_shown(
        self,
        impressions: Iterable[Impression],
        *,
        timeout: float | None = None,
        erasure_seen: int | None = None,
    ) -> ShownResult:
        """Report lists actually put in front of users (batched like ``track``; the
        results are summed). Idempotent per ``recommendation_id``: a resend counts as a
        duplicate. Feedback events carrying a recommendation id count for that response
        (for the items reported shown, when reported); others count for the latest
        response that showed the item to the user within the server's attribution window
        (24 h by default). No impressions, no RPC. ``erasure_seen`` (devices): as for
        ``track``; impressions of a user erased since are dropped (counted as duplicates)."""
        tally = _convert.ShownTally()
        for request in _convert.report_shown_requests(impressions, erasure_seen):
            tally.add(self._call("ReportShown", self._stub.ReportShown, request, timeout))
        return tally.result()

    def shown(
        self,
        recommendations: Recommendations,
        item_ids: Iterable[str] | None = None,
        *,
        user_id: str = "",
        timeout: float | None = None,
    ) -> ShownResult:
        """Report that ``item_ids`` (default: all, at most the first 1,000) of a response
        were shown, in that order, with the response's variant, experiment and model
        version (surface ``recommend``). Attribution then credits only these items of it.
        Nothing shown: no RPC."""
        impressions = _convert.shown_impressions(recommendations, item_ids, user_id)
        return self.report_shown(impressions, timeout=timeout)

    def report(
        self,
        experiment: str = "",
        *,
        from_ms: int = 0,
        to_ms: int = 0,
        timeout: float | None = None,
    ) -> FeedbackReport:
        """Attributed feedback per experiment (empty: every one) and variant over the
        impressions in ``[from_ms, to_ms)`` (unix ms; 0: from the start, until now), with
        95% intervals and each variant compared with its control. An event counts for
        the response its recommendation id names, else for the latest response that
        showed the item to the user within the attribution window (24 h by default).
        ``NotFoundError`` for an unknown experiment."""
        request = _convert.report_request(experiment, from_ms, to_ms)
        response = self._call("GetReport", self._stub.GetReport, request, timeout)
        return _convert.report_from(response)

    def upsert_items(self, items: Iterable[Item], *, timeout: float | None = None) -> int:
        """Add or replace catalogue items (batched like ``track``); returns how many."""
        upserted = 0
        for request in _convert.upsert_items_requests(items):
            upserted += self._call("UpsertItems", self._stub.UpsertItems, request, timeout).upserted
        return upserted

    def upsert_users(self, users: Iterable[User], *, timeout: float | None = None) -> int:
        """Add or replace user profiles (batched like ``track``); returns how many."""
        upserted = 0
        for request in _convert.upsert_users_requests(users):
            upserted += self._call("UpsertUsers", self._stub.UpsertUsers, request, timeout).upserted
        return upserted

    def set_availability(
        self, item_ids: Iterable[str], available: bool, *, timeout: float | None = None
    ) -> AvailabilityResult:
        """Make items unavailable (``available=False``: never recommended by any call,
        nor by a device after its next sync; their history still trains the model) or
        available again. Ids the catalogue does not hold are reported, not an error."""
        request = _convert.set_availability_request(item_ids, available)
        response = self._call("SetAvailability", self._stub.SetAvailability, request, timeout)
        return _convert.availability_from(response)

    def delete_user(self, user_id: str, *, timeout: float | None = None) -> DeleteResult:
        """Erase a user's events, vector and mappings; afterwards the user is unknown."""
        request = _convert.delete_user_request(user_id)
        response = self._call("DeleteUser", self._stub.DeleteUser, request, timeout)
        return _convert.delete_result_from(response)

    def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        """The serving model's version and the event store's counts."""
        request = pb.GetModelInfoRequest()
        response = self._call("GetModelInfo", self._stub.GetModelInfo, request, timeout)
        return _convert.model_info_from(response)

    def fetch_snapshot(
        self,
        user_id: str,
        destination: str | Path,
        *,
        have_version: str = "",
        timeout: float | None = None,
    ) -> SnapshotInfo:
        """Download the device snapshot for ``user_id`` into ``destination`` (its
        ``manifest.json`` and ``snapshot.npz``): a delta from ``have_version`` when the
        server still knows that version, else a full snapshot. The files are not verified
        here (no numpy in the client): ``shelfrank.core.snapshot`` checks their sha256.
        ``StorageError`` if the files cannot be written, ``DataLossError`` if the stream
        ends early."""
        request = _convert.snapshot_request(user_id, have_version)
        download = SnapshotDownload(destination_folder(destination))
        deadline = self._settings.timeout_for(timeout)
        if self._closed:
            raise ClientClosedError(f"{SNAPSHOT_METHOD}: the client is closed")
        try:
            stream = self._edge_stub.GetSnapshot(
                request, timeout=deadline, metadata=self._settings.metadata
            )
            for chunk in stream:
                download.add(chunk)
        except grpc.RpcError as error:
            raise from_rpc_error(error, method=SNAPSHOT_METHOD) from error
        except ValueError:  # grpc's "Cannot invoke RPC on closed channel!"
            if not self._closed:
                raise
            raise ClientClosedError(f"{SNAPSHOT_METHOD}: the client is closed") from None
        finally:
            download.close()
        return download.result()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Client({self._settings.target!r}, {state})"
