"""Stateless serving: two serving processes' services over one store (SQLite file or
PostgreSQL), each with its own store handle, caches and state. What one accepts, the
other serves at its next call, with no message between them and no extra call: the store
is the only thing they share (server/live.py, RecommenderService.current_state).

The same scenarios run on both backends; tests/test_replicas.py runs real server
processes over PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from shelfrank.core.events import EventType
from shelfrank.server.bootstrap import read_state_without_model
from shelfrank.server.config import TrainConfig
from shelfrank.server.registry import load_state
from shelfrank.server.requests import RecommendQuery, SimilarQuery
from shelfrank.server.service import RecommenderService
from shelfrank.server.snapshots import SnapshotService
from shelfrank.server.storage import EventStore
from shelfrank.server.stores import open_store
from tests.test_store_contract import new_schema

NOW_MS = 1_700_000_000_000


@dataclass
class Replicas:
    a: RecommenderService
    b: RecommenderService
    stores: tuple[EventStore, EventStore]
    model_dir: Path


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(
    request: pytest.FixtureRequest, toy_model_dir: Path, tmp_path: Path
) -> Iterator[Replicas]:
    if request.param == "sqlite":
        location = str(tmp_path / "events.sqlite3")
    else:
        location = new_schema(request.getfixturevalue("postgres_database"))
    stores = (open_store(location), open_store(location))
    # Each its own state, loaded from the same model (as two processes would).
    a = RecommenderService(stores[0], load_state(toy_model_dir))
    b = RecommenderService(stores[1], load_state(toy_model_dir))
    yield Replicas(a, b, stores, toy_model_dir)
    for store in stores:
        store.close()


def track(service: RecommenderService, user: str, item: str, kind: str, event_id: str) -> None:
    outcome = service.track(
        [(event_id, user, item, int(EventType[kind.upper()]), NOW_MS, "", "", "", 0)]
    )
    assert (outcome.accepted, outcome.errors) == (1, ())


def top(service: RecommenderService, user: str, k: int = 32, **query: object) -> list[str]:
    scored = service.recommend(RecommendQuery(user_id=user, k=k, **query))  # type: ignore[arg-type]
    return [item for item, _ in scored.items]


def test_a_purchase_and_a_dismissal_on_one_are_excluded_by_the_other(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    first, second = top(b, "u0", k=2)  # b has read u0 before: its record must not go stale
    track(a, "u0", first, "purchase", "p1")
    assert first not in top(b, "u0")
    track(a, "u0", second, "dismiss", "d1")
    assert second not in top(b, "u0")
    assert {first, second}.isdisjoint(top(a, "u0"))


def test_a_new_user_tracked_on_one_is_folded_in_by_the_other(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    assert b.recommend(RecommendQuery(user_id="newbie", k=5)).strategy == "popularity"
    for n, item in enumerate(["book1", "book2", "book4"]):
        track(a, "newbie", item, "purchase", f"n{n}")
    answer = b.recommend(RecommendQuery(user_id="newbie", k=5))
    assert answer.strategy == "fold-in"
    assert answer.items == a.recommend(RecommendQuery(user_id="newbie", k=5)).items
    assert sum(item.startswith("book") for item, _ in answer.items) >= 4


def test_a_profile_upserted_on_one_is_used_by_the_other(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    assert b.recommend(RecommendQuery(user_id="stranger", k=3)).strategy == "popularity"
    a.upsert_users([("stranger", ["segment=reader"])])
    assert b.recommend(RecommendQuery(user_id="stranger", k=3)).strategy == "features"


def test_an_item_upserted_on_one_is_recommendable_from_the_other_at_once(
    replicas: Replicas,
) -> None:
    a, b = replicas.a, replicas.b
    assert a.state.catalogue_through == b.state.catalogue_through
    a.upsert_items([("kettle", ["category=kitchen"])])
    only_kitchen = top(b, "u0", filters=(("category=kitchen",),))
    assert only_kitchen == ["kettle"]
    assert b.similar_items(SimilarQuery(item_id="kettle", k=3)).items  # known there too
    # Re-tagged: every process sees the new tokens, and the cold item's vector follows
    # them (the same table whichever way the changes arrived).
    a.upsert_items([("kettle", ["category=books"])])
    b.upsert_items([("toaster", ["category=kitchen"])])
    assert top(a, "u0", filters=(("category=kitchen",),)) == ["toaster"]
    state_a, state_b = a.current_state(), b.current_state()
    assert state_a.snapshot_version == state_b.snapshot_version
    row_a, row_b = (s.model.item_ids.index("kettle") for s in (state_a, state_b))
    assert np.array_equal(
        state_a.model.items.item_vectors[row_a], state_b.model.items.item_vectors[row_b]
    )
    fresh = RecommenderService(replicas.stores[0], load_state(replicas.model_dir))
    assert fresh.state.snapshot_version == state_a.snapshot_version
    row = fresh.state.model.item_ids.index("kettle")
    assert np.array_equal(
        fresh.state.model.items.item_vectors[row], state_a.model.items.item_vectors[row_a]
    )


def test_an_erasure_on_one_stops_the_other_serving_the_user(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    track(a, "u3", "shoe1", "view", "v1")
    assert a.recommend(RecommendQuery(user_id="u3", k=3)).strategy == "trained"
    assert b.recommend(RecommendQuery(user_id="u3", k=3)).strategy == "trained"
    existed, deleted = b.delete_user("u3")
    assert (existed, deleted) == (True, 1)
    for service in (a, b):
        answer = service.recommend(RecommendQuery(user_id="u3", k=3))
        assert answer.strategy == "popularity"  # no trained vector, no history
    assert a.delete_user("u3") == (False, 0)  # a retry anywhere: nothing existed
    assert a.info().users == b.info().users == 19
    # The user comes back: folded in from the new events only.
    track(b, "u3", "book1", "purchase", "back1")
    assert a.recommend(RecommendQuery(user_id="u3", k=3)).strategy == "fold-in"


def test_device_snapshots_have_the_same_version_on_every_process(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    a.upsert_items([("kettle", ["category=kitchen"])])
    from_a = SnapshotService(a).for_user("u0")
    from_b = SnapshotService(b).for_user("u0")
    assert from_a.version == from_b.version
    assert from_a.manifest_json == from_b.manifest_json


def test_popularity_before_a_model_agrees_across_processes(tmp_path: Path) -> None:
    location = tmp_path / "events.sqlite3"
    one, two = open_store(location), open_store(location)
    try:
        config = TrainConfig()
        a = RecommenderService(one, read_state_without_model(one, config))
        b = RecommenderService(two, read_state_without_model(two, config))
        a.track(
            [
                (f"e{n}", f"u{n}", "toaster", int(EventType.PURCHASE), NOW_MS, "", "", "", 0)
                for n in range(3)
            ]
        )
        a.track([("k", "u9", "kettle", int(EventType.VIEW), NOW_MS, "", "", "", 0)])
        assert top(b, "anyone") == ["toaster", "kettle"]
        for user in ("u0", "u1", "u2"):  # erased on b: their purchases no longer count on a
            b.delete_user(user)
        assert top(a, "anyone") == ["kettle"]
        assert a.state.snapshot_version == b.current_state().snapshot_version
    finally:
        one.close()
        two.close()
