"""One retry policy: the channel retries UNAVAILABLE, nothing above it does.

A tiny gRPC server answers every call of both services (Recommender and EdgeSync) with
UNAVAILABLE, or with a scripted answer, and counts the attempts it sees. One call of the
client makes at most ``max_attempts`` attempts, whatever the method; a sync of the edge
stops at the first RPC that stays unavailable, so a sync round against a server that is
down makes ``max_attempts`` attempts in all (before there was one policy, the edge's own
backoff on top of the channel's retries made up to 4 x 5 = 20 per call).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from shelfrank.client import AsyncClient, Client, ServiceError, UnavailableError
from shelfrank.edge import EdgeRecommender
from shelfrank.proto._generated import edge_sync_pb2
from tests.test_error_root import CLIENT_CASES, RPC_METHODS, World

STREAMING = {"/shelfrank.v1.EdgeSync/GetSnapshot"}
# Sync clients should get all their attempts in: the backoff stays well within this.
TIMEOUT = 30.0


class Counting(grpc.GenericRpcHandler):
    """Answers every method of any service with ``code`` (UNAVAILABLE), unless ``answers``
    scripts the method (a function of the raw request giving the raw response messages)."""

    def __init__(
        self,
        answers: dict[str, Callable[[bytes], list[bytes]]] | None = None,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    ) -> None:
        self.attempts: Counter[str] = Counter()
        self._answers = answers or {}
        self._code = code
        self._lock = threading.Lock()

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        name = method.rsplit("/", 1)[-1]

        def answer(request: bytes, context: grpc.ServicerContext) -> list[bytes]:
            with self._lock:
                self.attempts[name] += 1
            script = self._answers.get(name)
            if script is None:
                context.abort(self._code, f"{self._code.name} for the test")
            return script(request)

        if method in STREAMING:
            return grpc.unary_stream_rpc_method_handler(lambda r, c: iter(answer(r, c)))
        return grpc.unary_unary_rpc_method_handler(lambda r, c: answer(r, c)[0])

    def total(self) -> int:
        with self._lock:
            return sum(self.attempts.values())


@contextmanager
def serving(handler: Counting) -> Iterator[str]:
    pool = ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool, handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()
        pool.shutdown(wait=True)


@pytest.fixture
def down() -> Iterator[tuple[Counting, str]]:
    handler = Counting()
    with serving(handler) as target:
        yield handler, target


def world(target: str, tmp_path: Path) -> World:
    return World(target=target, dead_target=target, model_dir=tmp_path, tmp=tmp_path)


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
@pytest.mark.parametrize("method", RPC_METHODS)
def test_each_client_call_makes_at_most_max_attempts(
    down: tuple[Counting, str], tmp_path: Path, method: str, max_attempts: int
) -> None:
    handler, target = down
    args = CLIENT_CASES[method].valid_args(world(target, tmp_path))
    with (
        Client(target, max_attempts=max_attempts, timeout=TIMEOUT) as client,
        pytest.raises(UnavailableError),
    ):
        getattr(client, method)(**args)
    assert handler.total() == max_attempts


@pytest.mark.parametrize("method", RPC_METHODS)
def test_the_async_client_has_the_same_bound(
    down: tuple[Counting, str], tmp_path: Path, method: str
) -> None:
    handler, target = down
    args = CLIENT_CASES[method].valid_args(world(target, tmp_path))

    async def scenario() -> None:
        async with AsyncClient(target, max_attempts=3, timeout=TIMEOUT) as client:
            await getattr(client, method)(**args)

    with pytest.raises(UnavailableError):
        asyncio.run(scenario())
    assert handler.total() == 3


def test_the_default_is_five_attempts(down: tuple[Counting, str]) -> None:
    handler, target = down
    with Client(target, timeout=TIMEOUT) as client, pytest.raises(UnavailableError):
        client.model_info()
    assert handler.total() == 5


@pytest.mark.parametrize("max_attempts", [1, 3, None])
def test_a_sync_against_a_server_that_is_down_makes_max_attempts_in_all(
    down: tuple[Counting, str], tmp_path: Path, max_attempts: int | None
) -> None:
    handler, target = down
    path = tmp_path / "device"
    if max_attempts is None:  # the edge's default
        device, expected = EdgeRecommender(path, "u0", target, timeout=TIMEOUT), 4
    else:
        device = EdgeRecommender(path, "u0", target, timeout=TIMEOUT, max_attempts=max_attempts)
        expected = max_attempts
    try:
        device.track("view", "book1")
        result = device.sync()
        assert result.offline
        assert result.pending == 1
        assert "UNAVAILABLE" in result.error
        # The pull comes first; once it stays unavailable nothing else is tried.
        assert handler.attempts == Counter({"GetSnapshot": expected})
    finally:
        device.close()


def test_a_push_that_stays_unavailable_is_tried_max_attempts_times(tmp_path: Path) -> None:
    """The pull is answered (with a snapshot that does not verify, so none is installed),
    the push is not: Track sees max_attempts attempts, the events stay queued."""
    header = edge_sync_pb2.SnapshotHeader(version="v1", payload_bytes=0, manifest_json="{}")
    snapshot = edge_sync_pb2.SnapshotChunk(header=header).SerializeToString()
    handler = Counting({"GetSnapshot": lambda request: [snapshot]})
    with serving(handler) as target:
        device = EdgeRecommender(tmp_path / "device", "u0", target, timeout=TIMEOUT, max_attempts=3)
        try:
            for item in ("book1", "book2"):
                device.track("view", item)
            result = device.sync()
        finally:
            device.close()
    assert result.offline
    assert result.pending == 2
    assert handler.attempts == Counter({"GetSnapshot": 1, "Track": 3})


def test_other_failures_end_the_sync_at_once(tmp_path: Path) -> None:
    """Only UNAVAILABLE is retried: a refusal surfaces as its ServiceError after one
    attempt (here UNAUTHENTICATED, as for a wrong token)."""
    handler = Counting(code=grpc.StatusCode.UNAUTHENTICATED)
    with serving(handler) as target:
        device = EdgeRecommender(tmp_path / "device", "u0", target, timeout=TIMEOUT, max_attempts=5)
        try:
            with pytest.raises(ServiceError) as refused:
                device.sync()
        finally:
            device.close()
    assert refused.value.code == "UNAUTHENTICATED"
    assert handler.attempts == Counter({"GetSnapshot": 1})
