"""What each user did since the serving model was trained, for read-your-writes.

For every user touched since start-up the service keeps an immutable :class:`UserLive`
record: the events newer than the model's watermark (folded into the user's vector at
request time) and every item the user purchased or dismissed (excluded from results).
Records are loaded lazily from the store, replaced (never mutated) under a lock when
events arrive, and dropped when the user is erased or a new model moves the watermark.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shelfrank.core.events import EventType
from shelfrank.server.store import StoredEvent

CONSUMED = frozenset({EventType.PURCHASE, EventType.DISMISS})
_MAX_WRITE_COUNTERS = 100_000


@dataclass(frozen=True)
class UserLive:
    watermark_seq: int
    fresh: tuple[StoredEvent, ...]  # newer than the watermark, in storage order
    consumed: frozenset[str]  # items purchased or dismissed, at any time

    def merged(self, events: Sequence[StoredEvent]) -> UserLive:
        """This record plus ``events`` (event ids already present are skipped)."""
        known = {e.event_id for e in self.fresh}
        new = tuple(e for e in events if e.event_id not in known)
        return UserLive(
            self.watermark_seq,
            self.fresh + new,
            self.consumed | {e.item_id for e in new if e.event_type in CONSUMED},
        )


Loader = Callable[[str], list[tuple[int, StoredEvent]]]


class LiveUsers:
    def __init__(self, load_all: Loader) -> None:
        self._load_all = load_all
        self._lock = threading.Lock()
        self._users: dict[str, UserLive] = {}
        # Bumped by forget/clear: a load that started before must not be stored after.
        self._generation = 0
        # Per user, writes that found no cached record (see ``record``).
        self._writes: dict[str, int] = {}

    def get(self, user_id: str, watermark_seq: int) -> UserLive:
        record = self._users.get(user_id)
        if record is not None and record.watermark_seq == watermark_seq:
            return record
        with self._lock:
            stamp = (self._generation, self._writes.get(user_id, 0))
        loaded = self._load(user_id, watermark_seq)
        with self._lock:
            current = self._users.get(user_id)
            if current is not None and current.watermark_seq == watermark_seq:
                return current  # a concurrent get got there first
            # Cache only if nothing was written for this user (and nothing forgotten)
            # while loading: the load may have missed those events.
            if stamp == (self._generation, self._writes.get(user_id, 0)):
                self._users[user_id] = loaded
                # Later loads find this record first, so its counter has done its job.
                self._writes.pop(user_id, None)
        return loaded

    def _load(self, user_id: str, watermark_seq: int) -> UserLive:
        events = self._load_all(user_id)
        fresh = tuple(e for seq, e in events if seq > watermark_seq)
        consumed = frozenset(e.item_id for _, e in events if e.event_type in CONSUMED)
        return UserLive(watermark_seq, fresh, consumed)

    def record(self, events: Sequence[StoredEvent], watermark_seq: int) -> None:
        """Add newly stored (already durable) events to their users' records.

        Without a cached record nothing is loaded here (ingest stays one transaction per
        batch, not one read per user): the next read loads from the store, which already
        holds these events. The write counter keeps a load that raced with this write from
        caching what it read before the events were stored."""
        by_user: dict[str, list[StoredEvent]] = {}
        for event in events:
            by_user.setdefault(event.user_id, []).append(event)
        with self._lock:  # once per batch: a batch spans hundreds of users
            users, writes = self._users, self._writes
            for user_id, user_events in by_user.items():
                current = users.get(user_id)
                if current is not None and current.watermark_seq == watermark_seq:
                    users[user_id] = current.merged(user_events)
                elif len(writes) >= _MAX_WRITE_COUNTERS:
                    # Bounded memory for write-only users: invalidate all in-flight loads.
                    self._generation += 1
                    writes.clear()
                else:
                    writes[user_id] = writes.get(user_id, 0) + 1

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._users.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._users.clear()
            self._writes.clear()  # the generation bump already invalidates in-flight loads
