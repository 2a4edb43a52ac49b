"""Per-user records re-validated against the store at every read (server/live.py), over a
real SQLite store: another process's writes and erasures are seen at the next read, a
slow read never replaces a newer record, and only the events after a record are read."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.live import LiveUsers
from shelfrank.server.storage import UserView
from shelfrank.server.store import SQLiteStore


def event(
    event_id: str, item: str, kind: EventType = EventType.PURCHASE, user: str = "u1"
) -> StoredEvent:
    return StoredEvent(event_id, user, item, kind, 1_700_000_000_000)


class RecordingReader:
    """The store's user_view, recording each ``after_seq`` asked for; optionally paused
    after its read (to interleave another request)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.asked: list[int] = []
        self.pause_next = False
        self.read_done = threading.Event()
        self.resume = threading.Event()

    def __call__(self, user_id: str, after_seq: int) -> UserView:
        self.asked.append(after_seq)
        view = self.store.user_view(user_id, after_seq)
        if self.pause_next:
            self.pause_next = False
            self.read_done.set()
            self.resume.wait(5)
        return view


@pytest.fixture
def stores(tmp_path: Path) -> tuple[SQLiteStore, SQLiteStore]:
    """The store this process reads, and another process's handle on the same file."""
    path = tmp_path / "events.sqlite3"
    return SQLiteStore(path), SQLiteStore(path)


def test_a_record_is_extended_by_the_events_after_it(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    mine, other = stores
    reader = RecordingReader(mine)
    live = LiveUsers(reader)
    other.append_events([event("e1", "a", EventType.VIEW)])
    first, _ = live.get("u1", 0)
    assert first.fresh_items == ("a",)
    other.append_events([event("e2", "b"), event("x", "z", user="u2")])
    second, view = live.get("u1", 0)
    assert reader.asked == [0, first.loaded_seq]  # only what came after the record
    assert [e.event_id for _, e in view.events] == ["e2"]
    assert second.fresh_items == ("a", "b")
    assert second.fresh_types == (EventType.VIEW, EventType.PURCHASE)
    assert second.consumed == {"b"}
    assert second.loaded_seq == other.last_seq()
    # A newer model moves the watermark: the record is read afresh, older events are in it.
    assert live.get("u1", second.loaded_seq)[0].fresh_items == ()
    assert live.get("u1", second.loaded_seq)[0].consumed == {"b"}


def test_the_profile_follows_the_store(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    mine, other = stores
    live = LiveUsers(mine.user_view)
    assert live.get("u1", 0)[0].profile == ()
    other.upsert_users([("u1", ["segment=vip"])])
    assert live.get("u1", 0)[0].profile == ("segment=vip",)


def test_an_erasure_by_another_process_rebuilds_the_record(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    mine, other = stores
    live = LiveUsers(mine.user_view)
    other.append_events([event("e1", "bought"), event("e2", "seen", EventType.VIEW)])
    before, _ = live.get("u1", 0)
    assert before.consumed == {"bought"}
    assert before.latest_erasure == 0
    other.delete_user("u1")
    other.append_events([event("e3", "new", EventType.VIEW)])  # the user comes back
    after, _ = live.get("u1", 0)
    assert after.latest_erasure == other.latest_erasure("u1") > 0
    assert after.consumed == frozenset()
    assert after.fresh_items == ("new",)


def test_a_slow_read_never_replaces_a_newer_record(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    mine, other = stores
    reader = RecordingReader(mine)
    live = LiveUsers(reader)
    live.get("u1", 0)
    reader.pause_next = True
    slow: list[int] = []
    thread = threading.Thread(target=lambda: slow.append(live.get("u1", 0)[0].loaded_seq))
    thread.start()
    assert reader.read_done.wait(5)
    other.append_events([event("e1", "bought")])
    newer, _ = live.get("u1", 0)  # read while the slow one holds its older view
    reader.resume.set()
    thread.join(5)
    assert slow == [0]
    assert newer.consumed == {"bought"}
    assert live._users["u1"] is newer


def test_records_are_bounded_and_an_evicted_user_is_read_in_full(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    mine, other = stores
    reader = RecordingReader(mine)
    live = LiveUsers(reader, max_users=2)
    for user in ("u1", "u2", "u3"):
        other.append_events([event(f"e-{user}", f"i-{user}", user=user)])
        live.get(user, 0)
    assert list(live._users) == ["u2", "u3"]  # the least recently used left
    other.append_events([event("e4", "bought")])
    reader.asked.clear()
    assert live.get("u1", 0)[0].consumed == {"i-u1", "bought"}
    assert reader.asked == [0]


def test_max_users_must_be_positive(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    with pytest.raises(InvalidInputError, match="max_users"):
        LiveUsers(stores[0].user_view, max_users=0)
