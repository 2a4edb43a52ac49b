"""A server started with no model and no data: popularity over what is tracked, its first
model trained by itself once the store holds enough, never a synthetic shop in the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shelfrank.client import Client, Event, FeatureFilter, Item, Strategy
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.app import RunningServer, ServerOptions, start
from shelfrank.server.store import SQLiteStore
from tests.conftest import SERVER_CONFIG, serve_process, stop_process


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[tuple[RunningServer, Client]]:
    # A threshold out of reach: these tests are about serving before any model.
    options = ServerOptions(
        state_dir=tmp_path, port=0, train_config=SERVER_CONFIG, first_model_events=10**9
    )
    running = start(options)
    client = Client(f"127.0.0.1:{running.port}")
    try:
        yield running, client
    finally:
        client.close()
        running.stop()


def test_an_empty_server_answers_popularity_with_nothing(
    empty_server: tuple[RunningServer, Client],
) -> None:
    _, client = empty_server
    info = client.model_info()
    assert (info.model_version, info.users, info.items, info.stored_events) == ("", 0, 0, 0)
    answer = client.recommend("anyone")
    assert answer.strategy is Strategy.POPULARITY
    assert answer.items == ()


def test_before_the_first_model_items_rank_by_what_was_tracked(
    empty_server: tuple[RunningServer, Client],
) -> None:
    running, client = empty_server
    client.upsert_items([Item("boot", ["category=shoes"]), Item("novel", ["category=books"])])
    # Upserted items are served at once, before any event, and filters see their features.
    fresh = client.recommend("u1")
    assert fresh.strategy is Strategy.POPULARITY
    assert set(fresh.item_ids) == {"boot", "novel"}
    assert client.recommend("u1", filters=[FeatureFilter(["category=books"])]).item_ids == (
        "novel",
    )
    # "atlas" is not in the catalogue: tracked items are recommendable all the same.
    client.track(
        [Event(f"u{n}", "atlas", "view") for n in range(3)]
        + [Event("u9", "novel", "purchase")]  # one purchase outweighs three views
    )
    ranked = client.recommend("u1", k=3)
    assert ranked.item_ids == ("novel", "atlas", "boot")
    scores = [item.score for item in ranked.items]
    assert scores == sorted(scores, reverse=True)
    assert scores[-1] == 0
    # Purchased items are left out for their buyer; Rank and SimilarItems say POPULARITY.
    assert "novel" not in client.recommend("u9", k=3).item_ids
    order = client.rank("u1", ["boot", "atlas", "novel"])
    assert (order.item_ids, order.strategy) == (("novel", "atlas", "boot"), Strategy.POPULARITY)
    similar = client.similar_items("novel", k=3)
    assert similar.strategy is Strategy.POPULARITY
    assert "novel" not in similar.item_ids
    assert client.model_info().stored_events == 4
    assert not running.service.state.trained


def test_erasing_a_shopper_takes_their_events_out_of_the_counts(
    empty_server: tuple[RunningServer, Client],
) -> None:
    _, client = empty_server
    client.track([Event("loud", "gadget", "purchase") for _ in range(5)])
    client.track([Event(f"q{n}", "kettle", "view") for n in range(2)])
    assert client.recommend("x", k=2).item_ids == ("gadget", "kettle")
    client.delete_user("loud")
    assert client.recommend("x", k=2).item_ids[0] == "kettle"


def test_another_process_on_the_same_store_counts_the_same_events(
    empty_server: tuple[RunningServer, Client], tmp_path: Path
) -> None:
    """Counts come from the store, not from this process's memory."""
    running, client = empty_server
    other = SQLiteStore(tmp_path / "events.sqlite3")
    try:
        other.append_events(
            [StoredEvent(f"e{n}", f"w{n}", "elsewhere", EventType.PURCHASE, 1) for n in range(4)]
        )
    finally:
        other.close()
    assert client.recommend("x", k=1).item_ids == ("elsewhere",)
    assert running.service.state.watermark_seq == 4


def _shop_events(users: int, per_user: int, seed: int) -> list[Event]:
    """Two tastes over 60 items, so the first model has something to learn."""
    rng = np.random.default_rng(seed)
    events = []
    for user in range(users):
        taste = "shoe" if user % 2 else "book"
        for item in rng.choice(30, size=per_user, replace=True):
            kind = "purchase" if item % 5 == 0 else "view"
            events.append(Event(f"shopper{user}", f"{taste}{item}", kind))
    return events


def test_the_first_model_trains_itself_once_the_store_is_ready(tmp_path: Path) -> None:
    """``shelfrank serve --state EMPTY_DIR`` (a real process, default thresholds: 1,000
    events from 50 users): nothing served but popularity until then, a model after, and
    nothing in the store that the shop did not send."""
    state = tmp_path / "state"
    process, address = serve_process(
        "--state", str(state), "--epochs", "5", "--components", "8", "--threads", "1"
    )
    try:
        with Client(address) as client:
            info = client.model_info()
            assert (info.model_version, info.items, info.stored_events) == ("", 0, 0)
            assert client.recommend("shopper1").strategy is Strategy.POPULARITY
            assert client.recommend("shopper1").items == ()
            catalogue = [
                Item(f"{taste}{n}", [f"category={taste}s"])
                for taste in ("shoe", "book")
                for n in range(30)
            ]
            client.upsert_items(catalogue)
            events = _shop_events(users=50, per_user=20, seed=1)
            assert len(events) == 1_000
            client.track(events[:-1])
            # One event short of the threshold: still no model.
            assert client.model_info().model_version == ""
            assert client.recommend("shopper1").strategy is Strategy.POPULARITY
            client.track(events[-1:])
            deadline = time.monotonic() + 180
            while client.model_info().model_version == "" and time.monotonic() < deadline:
                time.sleep(0.2)
            info = client.model_info()
            assert info.model_version != "", "no first model within 3 minutes"
            assert (info.users, info.items, info.stored_events) == (50, 60, 1_000)
            answer = client.recommend("shopper1", k=5)
            assert answer.strategy is Strategy.TRAINED
            assert answer.model_version == info.model_version
    finally:
        assert stop_process(process) == 0
    store = SQLiteStore(state / "events.sqlite3")
    try:
        stored = [event for _, event in store.iter_events()]
        assert {e.event_id for e in stored} == {e.event_id for e in events}
        assert set(store.item_features()) == {item.item_id for item in catalogue}
        assert store.user_features() == {}
    finally:
        store.close()


def test_a_device_syncing_before_the_first_model_follows_the_popularity(
    empty_server: tuple[RunningServer, Client], tmp_path: Path
) -> None:
    from shelfrank.edge import EdgeRecommender

    running, client = empty_server
    client.upsert_items([Item("a", ["c=x"]), Item("b", ["c=y"])])
    client.track([Event("u1", "a", "view")])
    phone = EdgeRecommender(tmp_path / "device", "u2", f"127.0.0.1:{running.port}")
    try:
        first = phone.sync()
        assert phone.recommend(k=2).item_ids == ("a", "b")
        client.track([Event(f"v{n}", "b", "purchase") for n in range(3)])
        second = phone.sync()
        assert second.snapshot_version != first.snapshot_version
        assert phone.recommend(k=2).item_ids == ("b", "a")
        assert phone.recommend(k=2).strategy is Strategy.POPULARITY
    finally:
        phone.close()
