"""What each user did since the serving model was trained, re-validated against the store
at every request, so every process sharing the store serves the same thing.

For every user touched recently the service keeps an immutable :class:`UserLive` record:
the items and types of the events newer than the model's watermark (folded into the
user's vector at request time), every item the user purchased or dismissed (excluded
from results), the user's profile and latest erasure. A record is never trusted as it
stands: each request reads the store's :class:`~shelfrank.server.storage.UserView` of the
events after the record's ``loaded_seq`` (one indexed read; the store's seqs are in
commit order, so nothing committed by any process can be missed) and extends it. A Track
accepted by another process is therefore seen at the next request, without messages
between processes; an erasure anywhere changes the user's latest erasure, and the record
is rebuilt from scratch.

At most ``max_users`` records are kept (least recently used go first): an evicted user is
simply read in full again, so the bound costs a read, never an event. A record holds no
event ids (two references per fresh event, about 16 bytes).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType
from shelfrank.server.storage import SeqEvents, UserView

CONSUMED = frozenset({EventType.PURCHASE, EventType.DISMISS})
# The latest events kept per record (item, type, timestamp): what a request's
# ``exclude_event_types`` look-back can reach.
MAX_RECENT = 200
MAX_USERS = 100_000  # records kept (a few hundred bytes each plus 16 per fresh event)


@dataclass(frozen=True, kw_only=True)
class UserLive:
    watermark_seq: int
    loaded_seq: int  # every event of the user with a seq up to this one is counted
    latest_erasure: int  # the user's latest erasure when read (0: never erased)
    profile: tuple[str, ...]  # the stored profile tokens, as of the last read
    fresh_items: tuple[str, ...]  # events newer than the watermark, in the order recorded
    fresh_types: tuple[EventType, ...]
    consumed: frozenset[str]  # items purchased or dismissed, at any time
    # The user's latest MAX_RECENT events (item, type, timestamp ms), oldest first.
    recent: tuple[tuple[str, EventType, int], ...] = ()

    def touched(self, event_types: frozenset[EventType], since_ms: int) -> set[str]:
        """Items of the recent events of these types at or after ``since_ms``."""
        return {
            item for item, kind, stamp in self.recent if kind in event_types and stamp >= since_ms
        }

    @classmethod
    def read(cls, view: UserView, watermark_seq: int) -> UserLive:
        """The record of a user's whole history (``view`` read after seq 0)."""
        empty = cls(
            watermark_seq=watermark_seq,
            loaded_seq=0,
            latest_erasure=view.latest_erasure,
            profile=view.profile,
            fresh_items=(),
            fresh_types=(),
            consumed=frozenset(),
        )
        return empty.extended(view)

    def extended(self, view: UserView) -> UserLive:
        """This record plus a view of the events after its ``loaded_seq`` (same erasure)."""
        new = _after(view.events, self.loaded_seq)
        fresh = _after(new, self.watermark_seq)
        # SQLite's last seq goes back when the newest events are erased; never this record.
        loaded = max(self.loaded_seq, view.last_seq)
        if not new and loaded == self.loaded_seq and view.profile == self.profile:
            return self
        return UserLive(
            watermark_seq=self.watermark_seq,
            loaded_seq=loaded,
            latest_erasure=self.latest_erasure,
            profile=view.profile,
            fresh_items=self.fresh_items + tuple(sys.intern(e.item_id) for _, e in fresh),
            fresh_types=self.fresh_types + tuple(e.event_type for _, e in fresh),
            consumed=self.consumed | {e.item_id for _, e in new if e.event_type in CONSUMED},
            recent=(
                self.recent
                + tuple((e.item_id, e.event_type, e.timestamp_ms) for _, e in new[-MAX_RECENT:])
            )[-MAX_RECENT:],
        )


def _after(events: SeqEvents, seq: int) -> SeqEvents:
    return events if not events or events[0][0] > seq else [p for p in events if p[0] > seq]


# The store's view of a user's events after a seq (EventStore.user_view).
ViewReader = Callable[[str, int], UserView]


class LiveUsers:
    def __init__(self, read_view: ViewReader, *, max_users: int = MAX_USERS) -> None:
        if max_users < 1:
            raise InvalidInputError(f"max_users: must be at least 1, got {max_users}")
        self._read_view = read_view
        self._lock = threading.Lock()
        self._max_users = max_users
        # Least recently used first (an OrderedDict: its get and move_to_end are C).
        self._users: OrderedDict[str, UserLive] = OrderedDict()
        # Bumped by forget/clear: a read that started before must not be cached after.
        self._generation = 0

    def get(self, user_id: str, watermark_seq: int) -> tuple[UserLive, UserView]:
        """The user's record, up to date with the store, and the view it was read with
        (its catalogue revision tells the caller whether the catalogue moved)."""
        with self._lock:  # an LRU read reorders: not safe without the lock
            record = self._users.get(user_id)
            if record is not None:
                if record.watermark_seq == watermark_seq:
                    self._users.move_to_end(user_id)
                else:
                    record = None
            generation = self._generation
        view = self._read_view(user_id, record.loaded_seq if record is not None else 0)
        if record is not None and view.latest_erasure != record.latest_erasure:
            # Erased (by any process) since the record was read: nothing of it stands.
            record = None
            view = self._read_view(user_id, 0)
        live = record.extended(view) if record is not None else UserLive.read(view, watermark_seq)
        with self._lock:
            current = self._users.get(user_id)
            # Concurrent reads: the newest wins (an older one never replaces it).
            if generation == self._generation and (
                current is None
                or current.watermark_seq != watermark_seq
                or (current.latest_erasure, current.loaded_seq)
                <= (live.latest_erasure, live.loaded_seq)
            ):
                self._users[user_id] = live
                self._users.move_to_end(user_id)
                if len(self._users) > self._max_users:
                    self._users.popitem(last=False)
        return live, view

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._users.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._users.clear()
