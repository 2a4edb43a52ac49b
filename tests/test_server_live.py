"""Read-your-writes records: a write racing with a load never leaves a stale record."""

from __future__ import annotations

import threading

import pytest

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.live import LiveUsers


def event(event_id: str, item: str, kind: EventType = EventType.PURCHASE) -> StoredEvent:
    return StoredEvent(event_id, "u1", item, kind, 1_700_000_000_000)


class SlowStore:
    """A store whose read can be paused after it has read, to interleave a write."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, StoredEvent]] = []
        self.read_done = threading.Event()
        self.resume = threading.Event()
        self.pause = False

    def user_history(self, user_id: str) -> tuple[int, list[tuple[int, StoredEvent]]]:
        snapshot = list(self.rows)
        if self.pause:
            self.read_done.set()
            self.resume.wait(5)
        return max((seq for seq, _ in snapshot), default=0), snapshot


def test_a_write_during_a_load_is_not_lost() -> None:
    store = SlowStore()
    live = LiveUsers(store.user_history)
    store.pause = True
    seen: list[frozenset[str]] = []
    reader = threading.Thread(target=lambda: seen.append(live.get("u1", 0).consumed))
    reader.start()
    store.read_done.wait(5)
    # The event is durable, then recorded, while the reader holds an older read.
    store.rows.append((1, event("e1", "bought")))
    live.record([event("e1", "bought")], [1], 0)
    store.pause = False
    store.resume.set()
    reader.join(5)
    assert seen == [frozenset()]  # that read predates the write...
    assert live.get("u1", 0).consumed == {"bought"}  # ...but it was not cached


def test_records_merge_new_events_and_skip_what_the_load_counted() -> None:
    store = SlowStore()
    store.rows = [(1, event("e1", "a", EventType.VIEW))]
    live = LiveUsers(store.user_history)
    assert live.get("u1", 0).fresh_items == ("a",)
    # e1 (seq 1) was in the load; e2 (seq 2) is new.
    live.record([event("e1", "a", EventType.VIEW), event("e2", "b")], [1, 2], 0)
    record = live.get("u1", 0)
    assert record.fresh_items == ("a", "b")
    assert record.fresh_types == (EventType.VIEW, EventType.PURCHASE)
    assert record.consumed == {"b"}
    # Recorded out of seq order (two batches of one group commit): both count.
    live.record([event("e4", "d", EventType.VIEW)], [4], 0)
    live.record([event("e3", "c", EventType.VIEW)], [3], 0)
    assert live.get("u1", 0).fresh_items == ("a", "b", "d", "c")
    # A newer model moves the watermark: older events are no longer fresh.
    store.rows.append((2, event("e2", "b")))
    assert live.get("u1", 2).fresh_items == ()


def test_write_counters_stay_bounded() -> None:
    from shelfrank.server import live as live_module

    live = LiveUsers(lambda user: (0, []))
    for i in range(live_module._MAX_WRITE_COUNTERS + 5):
        live.record([event(f"e{i}", "x")._replace(user_id=f"user{i}")], [i + 1], 0)
    assert len(live._writes) <= live_module._MAX_WRITE_COUNTERS


def test_records_are_bounded_and_an_evicted_user_reloads_everything() -> None:
    store = SlowStore()
    live = LiveUsers(store.user_history, max_users=2)
    for seq, user in enumerate(("u1", "u2", "u3"), start=1):
        store.rows.append((seq, event(f"e{seq}", f"i{seq}")._replace(user_id=user)))
    # SlowStore ignores the user: every load sees all rows, which is enough here.
    for user in ("u1", "u2", "u3"):
        live.get(user, 0)
    assert len(live._users) == 2
    assert "u1" not in live._users  # the least recently used left
    # u1 buys while evicted: the write is counted, and the next read loads it from the store.
    store.rows.append((4, event("e4", "bought")))
    live.record([event("e4", "bought")], [4], 0)
    assert "bought" in live.get("u1", 0).consumed


def test_max_users_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_users"):
        LiveUsers(lambda user: (0, []), max_users=0)
