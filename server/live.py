"""What each user did since the serving model was trained, for read-your-writes.

For every user touched since start-up the service keeps an immutable :class:`UserLive`
record: the items and types of the events newer than the model's watermark (folded into
the user's vector at request time) and every item the user purchased or dismissed
(excluded from results). Records are loaded lazily from the store, replaced (never
mutated) under a lock when events arrive, and dropped when the user is erased or a new
model moves the watermark.

At most ``max_users`` records are kept (least recently used go first): an evicted user is
simply loaded from the store again on the next read, so the bound costs a read, never an
event.

A record holds no event ids: it knows the store's last seq when it was loaded, so an
event recorded after the load is new exactly when its seq is higher. That keeps a fresh
event to two references (about 16 bytes), which matters for a server that runs long
between retrains.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType, StoredEvent, user_id_of

CONSUMED = frozenset({EventType.PURCHASE, EventType.DISMISS})
_MAX_WRITE_COUNTERS = 100_000
MAX_USERS = 100_000  # records kept (a few hundred bytes each plus 16 per fresh event)


@dataclass(frozen=True, kw_only=True)
class UserLive:
    watermark_seq: int
    loaded_seq: int  # the store's last seq when loaded: every event up to it is counted
    fresh_items: tuple[str, ...]  # events newer than the watermark, in the order recorded
    fresh_types: tuple[EventType, ...]
    consumed: frozenset[str]  # items purchased or dismissed, at any time

    def merged(self, events: Sequence[tuple[int, StoredEvent]]) -> UserLive:
        """This record plus ``(seq, event)`` pairs (those the load already counted skipped)."""
        new = [event for seq, event in events if seq > self.loaded_seq]
        if not new:
            return self
        return UserLive(
            watermark_seq=self.watermark_seq,
            loaded_seq=self.loaded_seq,
            fresh_items=self.fresh_items + tuple(sys.intern(e.item_id) for e in new),
            fresh_types=self.fresh_types + tuple(e.event_type for e in new),
            consumed=self.consumed | {e.item_id for e in new if e.event_type in CONSUMED},
        )


# The store's last seq and the user's (seq, event) pairs, read from one snapshot.
Loader = Callable[[str], tuple[int, list[tuple[int, StoredEvent]]]]


class LiveUsers:
    def __init__(self, load_all: Loader, *, max_users: int = MAX_USERS) -> None:
        if max_users < 1:
            raise InvalidInputError(f"max_users: must be at least 1, got {max_users}")
        self._load_all = load_all
        self._lock = threading.Lock()
        self._max_users = max_users
        # Least recently used first (an OrderedDict: its get and move_to_end are C, and a
        # Track batch touches hundreds of users).
        self._users: OrderedDict[str, UserLive] = OrderedDict()
        # Bumped by forget/clear: a load that started before must not be stored after.
        self._generation = 0
        # Per user, writes that found no cached record (see ``record``).
        self._writes: dict[str, int] = {}

    def get(self, user_id: str, watermark_seq: int) -> UserLive:
        with self._lock:  # an LRU read reorders: not safe without the lock
            record = self._users.get(user_id)
            if record is not None and record.watermark_seq == watermark_seq:
                self._users.move_to_end(user_id)
                return record
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
                if len(self._users) > self._max_users:
                    self._users.popitem(last=False)
                # Later loads find this record first, so its counter has done its job.
                self._writes.pop(user_id, None)
        return loaded

    def _load(self, user_id: str, watermark_seq: int) -> UserLive:
        last_seq, events = self._load_all(user_id)
        fresh = [e for seq, e in events if seq > watermark_seq]
        return UserLive(
            watermark_seq=watermark_seq,
            loaded_seq=last_seq,
            fresh_items=tuple(sys.intern(e.item_id) for e in fresh),
            fresh_types=tuple(e.event_type for e in fresh),
            consumed=frozenset(e.item_id for _, e in events if e.event_type in CONSUMED),
        )

    def record(
        self, events: Sequence[StoredEvent], seqs: Sequence[int], watermark_seq: int
    ) -> None:
        """Add newly stored (already durable) events, numbered ``seqs`` by the store, to
        their users' records.

        Without a cached record nothing is loaded here (ingest stays one transaction per
        batch, not one read per user): the next read loads from the store, which already
        holds these events. The write counter keeps a load that raced with this write from
        caching what it read before the events were stored."""
        touched = set(map(user_id_of, events))
        with self._lock:  # once per batch: a batch spans hundreds of users
            users, writes = self._users, self._writes
            cached: set[str] = set()
            for user_id in touched:
                current = users.get(user_id)
                if current is not None and current.watermark_seq == watermark_seq:
                    cached.add(user_id)
                elif len(writes) >= _MAX_WRITE_COUNTERS:
                    # Bounded memory for write-only users: invalidate all in-flight loads.
                    self._generation += 1
                    writes.clear()
                else:
                    writes[user_id] = writes.get(user_id, 0) + 1
            if not cached:  # the common case for ingest: no per-event work at all
                return
            by_user: dict[str, list[tuple[int, StoredEvent]]] = {}
            for seq, event in zip(seqs, events, strict=True):
                if event.user_id in cached:
                    by_user.setdefault(event.user_id, []).append((seq, event))
            for user_id, user_events in by_user.items():
                users[user_id] = users[user_id].merged(user_events)

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._users.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._users.clear()
            self._writes.clear()  # the generation bump already invalidates in-flight loads
