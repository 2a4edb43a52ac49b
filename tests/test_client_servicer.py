# ruff: noqa: N802 (the servicer's method names are the RPC names, set by the generator)
"""A real gRPC server with a recording, scriptable servicer for the client tests.

Imported by the other ``test_client_*`` modules (it holds no tests itself). The servicer
answers from canned/echo rules and records every attempt (request and
metadata), so tests can assert what the client really sent over the wire. Failures and
stalls are scripted per method. The real server's behaviour is tested elsewhere; here we
test the client's translation, batching, retries, deadlines and error mapping.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc

from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc

Context = Any  # grpc.ServicerContext; the generated stubs type it as a sync/aio union


class RecordingServicer(recommender_pb2_grpc.RecommenderServicer):
    """Canned answers; records attempts; fails or stalls on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, list[Any]] = defaultdict(list)
        self.metadata: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.attempts: Counter[str] = Counter()
        self._failures: dict[str, deque[tuple[grpc.StatusCode, str]]] = defaultdict(deque)
        self._stalls: dict[str, float] = {}
        self.release = threading.Event()
        self.stored_event_ids: set[str] = set()
        self.strategy: int = pb.FOLD_IN

    # scripting ---------------------------------------------------------------------
    def fail(self, method: str, code: grpc.StatusCode, details: str = "", times: int = 1) -> None:
        """The next ``times`` attempts of ``method`` end with ``code``."""
        self._failures[method].extend([(code, details)] * times)

    def stall(self, method: str, seconds: float) -> None:
        """Attempts of ``method`` wait this long (or until teardown) before answering."""
        self._stalls[method] = seconds

    # plumbing ----------------------------------------------------------------------
    def _enter(self, method: str, request: Any, context: Context) -> None:
        with self._lock:
            self.attempts[method] += 1
            self.requests[method].append(request)
            self.metadata[method].append(
                {item.key: item.value for item in context.invocation_metadata()}
            )
            failure = self._failures[method].popleft() if self._failures[method] else None
        if method in self._stalls:
            self.release.wait(self._stalls[method])
        if failure is not None:
            context.abort(failure[0], failure[1])

    # the service -------------------------------------------------------------------
    def Recommend(self, request: pb.RecommendRequest, context: Context) -> pb.RecommendResponse:
        self._enter("Recommend", request, context)
        items = [
            pb.ScoredItem(item_id=f"{request.user_id}-pick{rank}", score=1.0 - rank / 8)
            for rank in range(request.k)
        ]
        return pb.RecommendResponse(
            items=items,
            model_version="model-7",
            recommendation_id=f"rec-{self.attempts['Recommend']}",
            strategy=self.strategy,  # type: ignore[arg-type]
        )

    def SimilarItems(
        self, request: pb.SimilarItemsRequest, context: Context
    ) -> pb.RecommendResponse:
        self._enter("SimilarItems", request, context)
        items = [
            pb.ScoredItem(item_id=f"like-{request.item_id}-{rank}", score=0.5)
            for rank in range(request.k)
        ]
        return pb.RecommendResponse(
            items=items, model_version="model-7", recommendation_id="sim-1", strategy=pb.ITEM
        )

    def Rank(self, request: pb.RankRequest, context: Context) -> pb.RecommendResponse:
        self._enter("Rank", request, context)
        ranked = list(reversed(request.item_ids))
        items = [
            pb.ScoredItem(item_id=item_id, score=float(len(ranked) - position))
            for position, item_id in enumerate(ranked)
        ]
        return pb.RecommendResponse(
            items=items, model_version="model-7", recommendation_id="rank-1", strategy=pb.TRAINED
        )

    def Track(self, request: pb.TrackRequest, context: Context) -> pb.TrackResponse:
        """Like the contract: refuses item ids starting 'bad', de-duplicates event ids."""
        self._enter("Track", request, context)
        response = pb.TrackResponse()
        with self._lock:
            for index, event in enumerate(request.events):
                if event.item_id.startswith("bad"):
                    response.errors.append(pb.EventError(index=index, message="item_id: bad"))
                elif event.event_id in self.stored_event_ids:
                    response.duplicates += 1
                else:
                    self.stored_event_ids.add(event.event_id)
                    response.accepted += 1
        return response

    def UpsertItems(
        self, request: pb.UpsertItemsRequest, context: Context
    ) -> pb.UpsertItemsResponse:
        self._enter("UpsertItems", request, context)
        return pb.UpsertItemsResponse(upserted=len(request.items))

    def UpsertUsers(
        self, request: pb.UpsertUsersRequest, context: Context
    ) -> pb.UpsertUsersResponse:
        self._enter("UpsertUsers", request, context)
        return pb.UpsertUsersResponse(upserted=len(request.users))

    def DeleteUser(self, request: pb.DeleteUserRequest, context: Context) -> pb.DeleteUserResponse:
        self._enter("DeleteUser", request, context)
        known = request.user_id == "known-user"
        return pb.DeleteUserResponse(existed=known, events_deleted=12 if known else 0)

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Context) -> pb.ModelInfo:
        self._enter("GetModelInfo", request, context)
        return pb.ModelInfo(
            model_version="model-7",
            trained_at_ms=1_700_000_000_123,
            users=3_000_000_000,  # above 2**31: int64 all the way
            items=42,
            stored_events=7,
        )


@contextmanager
def serving(
    servicer: RecordingServicer, *, tls_key_and_cert: tuple[bytes, bytes] | None = None
) -> Iterator[str]:
    """Run ``servicer`` on a free loopback port; yields the target, always stops it."""
    pool = ThreadPoolExecutor(max_workers=8)
    server = grpc.server(pool)
    recommender_pb2_grpc.add_RecommenderServicer_to_server(servicer, server)
    if tls_key_and_cert is None:
        port = server.add_insecure_port("127.0.0.1:0")
        host = "127.0.0.1"
    else:
        credentials = grpc.ssl_server_credentials([tls_key_and_cert])
        port = server.add_secure_port("127.0.0.1:0", credentials)
        host = "localhost"  # the name in the test certificate
    server.start()
    try:
        yield f"{host}:{port}"
    finally:
        servicer.release.set()  # let stalled handlers finish at once
        server.stop(0).wait()
        pool.shutdown(wait=True)
