"""The Python SDK against the real server: in-process and as a `shelfrank serve` process."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shelfrank.client import (
    AsyncClient,
    Client,
    Event,
    FeatureFilter,
    InvalidArgumentError,
    InvalidInputError,
    Item,
    NotFoundError,
    ResourceExhaustedError,
    Strategy,
    UnauthenticatedError,
    User,
)
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.app import RunningServer, ServerOptions, start
from tests.conftest import SERVER_CONFIG, serve_process, stop_process

Shop = tuple[Interactions, FeatureTable, FeatureTable]
CONFIG = SERVER_CONFIG


@pytest.fixture(scope="module")
def model_dir(toy_model_dir: Path) -> Path:
    return toy_model_dir


@pytest.fixture
def server(model_dir: Path, tmp_path: Path) -> Iterator[RunningServer]:
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=model_dir,
            train_config=CONFIG,
            token="t0k",
        )
    )
    yield running
    running.stop()


def test_every_method_through_the_sdk(server: RunningServer) -> None:
    with Client(f"127.0.0.1:{server.port}", token="t0k") as client:
        info = client.model_info()
        assert info.model_version == server.service.state.model_version
        assert info.items == 32
        known = client.recommend("u0", k=4)
        assert known.strategy is Strategy.TRAINED
        assert len(known.items) == 4
        # read-your-writes for a new user
        result = client.track([Event("anon", f"book{i}", "view") for i in (1, 2, 4)])
        assert (result.accepted, result.duplicates, result.errors) == (3, 0, ())
        fresh = client.recommend("anon", k=5)
        assert fresh.strategy is Strategy.FOLD_IN
        assert all(i.startswith("book") for i in fresh.item_ids)
        # ... and for a known user: a purchase disappears from the results at once
        bought = known.item_ids[0]
        client.track([Event("u0", bought, "purchase")])
        assert bought not in client.recommend("u0", k=10).item_ids
        assert client.upsert_items([Item("sdk-item", ["brand=sdk", "category=shoes"])]) == 1
        assert client.recommend("u0", k=3, filters=[FeatureFilter(["brand=sdk"])]).item_ids == (
            "sdk-item",
        )
        assert client.upsert_users([User("profiled", ["segment=reader"])]) == 1
        profiled = client.recommend("profiled", k=5)
        assert profiled.strategy is Strategy.FEATURES
        assert sum(i.startswith("book") for i in profiled.item_ids) >= 4
        similar = client.similar_items("shoe2", k=3)
        assert similar.strategy is Strategy.ITEM
        assert "shoe2" not in similar.item_ids
        ranked = client.rank("u0", ["book1", "nope", "shoe3"])
        assert ranked.item_ids[-1] == "nope"
        deleted = client.delete_user("anon")
        assert deleted.existed
        assert deleted.events_deleted == 3
        assert client.recommend("anon", k=2).strategy is Strategy.POPULARITY
        with pytest.raises(NotFoundError, match="item_id"):
            client.similar_items("missing")
        with pytest.raises(InvalidInputError):  # refused before any RPC
            client.recommend("u0", k=0)


def test_replayed_batches_are_stored_once(server: RunningServer) -> None:
    events = [Event("u1", "shoe1", "view") for _ in range(20)]
    with Client(f"127.0.0.1:{server.port}", token="t0k") as client:
        results = [client.track(events) for _ in range(3)]
        assert [(r.accepted, r.duplicates) for r in results] == [(20, 0), (0, 20), (0, 20)]
        assert client.model_info().stored_events == 20


def test_server_side_rejections_map_to_sdk_errors(server: RunningServer) -> None:
    with Client(f"127.0.0.1:{server.port}", token="t0k") as client:
        far_future = Event("u1", "shoe1", "view", timestamp_ms=10**15)
        result = client.track([Event("u1", "shoe1", "view"), far_future])
        assert result.accepted == 1
        assert [e.index for e in result.errors] == [1]
        assert "timestamp_ms" in result.errors[0].message
        with pytest.raises(InvalidArgumentError, match=r"items\[0\]\.features\[0\]"):
            client.upsert_items([Item("x", ["not-a-token"])])
    with Client(f"127.0.0.1:{server.port}") as anonymous, pytest.raises(UnauthenticatedError):
        anonymous.model_info()
    with (
        Client(f"127.0.0.1:{server.port}", token="t0k") as client,
        pytest.raises((ResourceExhaustedError, InvalidInputError)),
    ):
        client.recommend("u0", k=5, exclude_item_ids=[f"i{n}" for n in range(10_001)])


def test_async_client_parity(server: RunningServer) -> None:
    async def scenario() -> tuple[str, tuple[str, ...], int]:
        async with AsyncClient(f"127.0.0.1:{server.port}", token="t0k") as client:
            await client.track([Event("async-user", "book3", "purchase")])
            recs = await client.recommend("async-user", k=3)
            info = await client.model_info()
            return recs.strategy.value, recs.item_ids, info.stored_events

    strategy, items, stored = asyncio.run(scenario())
    assert strategy == Strategy.FOLD_IN.value
    assert "book3" not in items
    assert stored == 1


def test_sdk_against_a_server_process_across_a_restart(tmp_path: Path, model_dir: Path) -> None:
    def serve() -> tuple[subprocess.Popen[str], str]:
        return serve_process("--state", str(tmp_path / "state"), "--model", str(model_dir))

    def stop(process: subprocess.Popen[str]) -> None:
        assert stop_process(process) == 0

    process, address = serve()
    try:
        with Client(address) as client:
            version = client.model_info().model_version
            events = [Event("proc-user", "book1", "purchase"), Event("proc-user", "book2", "view")]
            assert client.track(events).accepted == 2
    finally:
        stop(process)
    process, address = serve()
    try:
        with Client(address) as client:
            info = client.model_info()
            assert info.model_version == version
            assert info.stored_events == 2
            assert client.track(events).duplicates == 2
            recs = client.recommend("proc-user", k=5)
            assert recs.strategy is Strategy.FOLD_IN
            assert "book1" not in recs.item_ids
    finally:
        stop(process)
