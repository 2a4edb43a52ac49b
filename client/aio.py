"""The asyncio client: ``Client``'s methods as coroutines, on a ``grpc.aio`` channel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import grpc
import grpc.aio

from shelfrank.client import _convert
from shelfrank.client._channel import ChannelOption, channel_settings
from shelfrank.client._snapshot import METHOD as SNAPSHOT_METHOD
from shelfrank.client._snapshot import SnapshotDownload, destination_folder
from shelfrank.client.errors import ClientClosedError, WrongEventLoopError, from_rpc_error
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

if TYPE_CHECKING:
    from collections.abc import Callable

    from shelfrank.proto._generated.edge_sync_pb2_grpc import EdgeSyncAsyncStub
    from shelfrank.proto._generated.recommender_pb2_grpc import RecommenderAsyncStub

__all__ = ["AsyncClient"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class AsyncClient:
    """Asyncio client for a shelfrank server, with ``Client``'s arguments and behaviour.

    A ``grpc.aio`` channel belongs to one event loop, so it is opened on the first call
    (the constructor may run anywhere, e.g. at import time) and the client then serves
    that loop only. Use ``async with AsyncClient(...) as client:`` or ``await close()``.
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
        self._channel: grpc.aio.Channel | None = None
        self._stub: RecommenderAsyncStub | None = None
        self._edge_stub: EdgeSyncAsyncStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _open_stub(self, method: str) -> RecommenderAsyncStub:
        """The stub on this loop's channel, opening the channel on first use."""
        if self._closed:
            raise ClientClosedError(f"{method}: the client is closed")
        loop = asyncio.get_running_loop()
        if self._stub is None:
            settings = self._settings
            if settings.credentials is None:
                self._channel = grpc.aio.insecure_channel(settings.target, options=settings.options)
            else:
                self._channel = grpc.aio.secure_channel(
                    settings.target, settings.credentials, options=settings.options
                )
            self._loop = loop
            self._stub = RecommenderStub(self._channel)
            self._edge_stub = EdgeSyncStub(self._channel)
        elif loop is not self._loop:
            raise WrongEventLoopError(
                f"{method}: this AsyncClient was first used on another event loop; "
                "create one client per loop"
            )
        return self._stub

    def _open_edge_stub(self, method: str) -> EdgeSyncAsyncStub:
        """The EdgeSync stub on this loop's channel (opened with the Recommender one)."""
        self._open_stub(method)
        if self._edge_stub is None:  # never: _open_stub opens both
            raise ClientClosedError(f"{method}: the client is closed")
        return self._edge_stub

    async def _call(
        self,
        method: str,
        select_rpc: Callable[
            [RecommenderAsyncStub], grpc.aio.UnaryUnaryMultiCallable[_Request, _Response]
        ],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        """Make one RPC with its deadline and metadata; translate any gRPC failure."""
        deadline = self._settings.timeout_for(timeout)
        rpc = select_rpc(self._open_stub(method))
        try:
            return await rpc(request, timeout=deadline, metadata=self._settings.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error, method=method) from error
        except grpc.aio.UsageError:  # the channel was closed under the call
            raise ClientClosedError(f"{method}: the client is closed") from None

    async def recommend(
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
        """See ``Client.recommend``."""
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
        response = await self._call("Recommend", lambda stub: stub.Recommend, request, timeout)
        return _convert.recommendations_from(response)

    async def similar_items(
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
        """See ``Client.similar_items``."""
        request = _convert.similar_items_request(
            item_id,
            k,
            filters=filters,
            exclude_features=exclude_features,
            exclude_item_ids=exclude_item_ids,
            explain=explain,
            user_id=user_id,
        )
        response = await self._call(
            "SimilarItems", lambda stub: stub.SimilarItems, request, timeout
        )
        return _convert.recommendations_from(response)

    async def rank(
        self,
        user_id: str,
        item_ids: Iterable[str],
        *,
        user_features: Iterable[str] = (),
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recommendations:
        """See ``Client.rank``."""
        request = _convert.rank_request(
            user_id, item_ids, user_features=user_features, explain=explain
        )
        response = await self._call("Rank", lambda stub: stub.Rank, request, timeout)
        return _convert.recommendations_from(response)

    async def track(
        self,
        events: Iterable[Event],
        *,
        timeout: float | None = None,
        erasure_seen: int | None = None,
    ) -> TrackResult:
        """See ``Client.track`` (batches are sent one after another, in order)."""
        requests = _convert.track_requests(events, erasure_seen)
        tally = _convert.TrackTally()
        for offset, request in requests:
            tally.add(offset, await self._call("Track", lambda stub: stub.Track, request, timeout))
        return tally.result()

    async def report_shown(
        self,
        impressions: Iterable[Impression],
        *,
        timeout: float | None = None,
        erasure_seen: int | None = None,
    ) -> ShownResult:
        """See ``Client.report_shown`` (batches are sent one after another, in order)."""
        requests = _convert.report_shown_requests(impressions, erasure_seen)
        tally = _convert.ShownTally()
        for request in requests:
            tally.add(
                await self._call("ReportShown", lambda stub: stub.ReportShown, request, timeout)
            )
        return tally.result()

    async def shown(
        self,
        recommendations: Recommendations,
        item_ids: Iterable[str] | None = None,
        *,
        user_id: str = "",
        timeout: float | None = None,
    ) -> ShownResult:
        """See ``Client.shown``."""
        impressions = _convert.shown_impressions(recommendations, item_ids, user_id)
        return await self.report_shown(impressions, timeout=timeout)

    async def report(
        self,
        experiment: str = "",
        *,
        from_ms: int = 0,
        to_ms: int = 0,
        timeout: float | None = None,
    ) -> FeedbackReport:
        """See ``Client.report``."""
        request = _convert.report_request(experiment, from_ms, to_ms)
        response = await self._call("GetReport", lambda stub: stub.GetReport, request, timeout)
        return _convert.report_from(response)

    async def upsert_items(self, items: Iterable[Item], *, timeout: float | None = None) -> int:
        """See ``Client.upsert_items``."""
        requests = _convert.upsert_items_requests(items)
        upserted = 0
        for request in requests:
            response = await self._call(
                "UpsertItems", lambda stub: stub.UpsertItems, request, timeout
            )
            upserted += response.upserted
        return upserted

    async def upsert_users(self, users: Iterable[User], *, timeout: float | None = None) -> int:
        """See ``Client.upsert_users``."""
        requests = _convert.upsert_users_requests(users)
        upserted = 0
        for request in requests:
            response = await self._call(
                "UpsertUsers", lambda stub: stub.UpsertUsers, request, timeout
            )
            upserted += response.upserted
        return upserted

    async def set_availability(
        self, item_ids: Iterable[str], available: bool, *, timeout: float | None = None
    ) -> AvailabilityResult:
        """See ``Client.set_availability``."""
        request = _convert.set_availability_request(item_ids, available)
        response = await self._call(
            "SetAvailability", lambda stub: stub.SetAvailability, request, timeout
        )
        return _convert.availability_from(response)

    async def delete_user(self, user_id: str, *, timeout: float | None = None) -> DeleteResult:
        """See ``Client.delete_user``."""
        request = _convert.delete_user_request(user_id)
        response = await self._call("DeleteUser", lambda stub: stub.DeleteUser, request, timeout)
        return _convert.delete_result_from(response)

    async def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        """See ``Client.model_info``."""
        response = await self._call(
            "GetModelInfo", lambda stub: stub.GetModelInfo, pb.GetModelInfoRequest(), timeout
        )
        return _convert.model_info_from(response)

    async def fetch_snapshot(
        self,
        user_id: str,
        destination: str | Path,
        *,
        have_version: str = "",
        timeout: float | None = None,
    ) -> SnapshotInfo:
        """See ``Client.fetch_snapshot`` (the files are written in a worker thread, so the
        event loop is not blocked by the disk)."""
        request = _convert.snapshot_request(user_id, have_version)
        download = SnapshotDownload(destination_folder(destination))
        deadline = self._settings.timeout_for(timeout)
        stub = self._open_edge_stub(SNAPSHOT_METHOD)
        try:
            stream = stub.GetSnapshot(request, timeout=deadline, metadata=self._settings.metadata)
            async for chunk in stream:
                await asyncio.to_thread(download.add, chunk)
        except grpc.RpcError as error:
            raise from_rpc_error(error, method=SNAPSHOT_METHOD) from error
        except grpc.aio.UsageError:  # the channel was closed under the call
            raise ClientClosedError(f"{SNAPSHOT_METHOD}: the client is closed") from None
        finally:
            await asyncio.to_thread(download.close)
        return await asyncio.to_thread(download.result)

    async def close(self) -> None:
        """Close the channel (if a call ever opened it). Closing twice is harmless."""
        self._closed = True
        self._stub = None
        self._edge_stub = None
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"AsyncClient({self._settings.target!r}, {state})"
