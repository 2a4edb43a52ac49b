"""Which stored events belong to which user, without indexing each event as it arrives.

An index on ``(user_id, seq)`` kept up by every insert writes one random B-tree page per
event and commit (user ids do not arrive in order): 4-5x the cost of the insert itself
(benchmarks/RESULTS.md, "Ingest"). Instead the table ``user_events`` indexes the events up
to a watermark (``meta.user_events_upto``) and is extended in bulk, sorted by user, once
``merge_every`` events have arrived after it, inside the appending transaction: each index
page is then written about once per merge instead of once per commit.

Events after the watermark (the tail, at most about ``merge_every``) are found through
:class:`RecentByUser`, this process's map of user -> seqs in the tail. The map is only a
hint: rows are always read back from the reader's own snapshot and checked to be the
user's, so a stale entry cannot show an event that is not stored; and it never misses a
tail event of the snapshot. It catches up from the snapshot before answering, and the
reader scans its tail instead when the map may lack rows its older snapshot still holds:
a merge trimmed them, or an erasure deleted them (the map knows the latest erasure it
has seen; entries only ever leave through trims and erasures).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

MERGE_EVERY = 50_000
UPTO_KEY = "user_events_upto"
# The watermark as a scalar subquery, for statements that read it with other values.
UPTO_SQL = f"(SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{UPTO_KEY}')"
# A stored event's columns, for reads joined with user_events (hence the table alias).
EVENT_COLUMNS = (
    "e.seq, e.event_id, e.user_id, e.item_id, e.event_type, e.timestamp_ms, e.session_id, e.query,"
    " e.recommendation_id, e.position"
)
EventRow = tuple[Any, ...]


def merged_upto(connection: sqlite3.Connection) -> int:
    """The watermark: every event with a seq up to it is in ``user_events``."""
    row = connection.execute(f"SELECT {UPTO_SQL}").fetchone()
    return int(row[0]) if row[0] is not None else 0


def merge(connection: sqlite3.Connection, upto: int, last: int) -> None:
    """Index the events in (upto, last] by user and move the watermark to ``last``, in the
    caller's write transaction (sorted, so consecutive rows land on the same pages)."""
    connection.execute(
        "INSERT INTO user_events (user_id, seq) SELECT user_id, seq FROM events"
        " WHERE seq > ? AND seq <= ? ORDER BY user_id, seq",
        (upto, last),
    )
    connection.execute("UPDATE meta SET value = ? WHERE key = ?", (str(last), UPTO_KEY))


def tail_seqs_of(connection: sqlite3.Connection, user_id: str, upto: int) -> list[int]:
    """The user's seqs after the watermark, by a scan of the tail (writers' rare paths)."""
    rows = connection.execute(
        "SELECT seq FROM events WHERE seq > ? AND user_id = ? ORDER BY seq", (upto, user_id)
    )
    return [int(row[0]) for row in rows]


def seqs_of(connection: sqlite3.Connection, user_id: str, upto: int) -> list[int]:
    """Every seq of the user's events (index and tail), ascending."""
    indexed = connection.execute(
        "SELECT seq FROM user_events WHERE user_id = ? ORDER BY seq", (user_id,)
    )
    return [int(row[0]) for row in indexed] + tail_seqs_of(connection, user_id, upto)


def indexed_rows(
    connection: sqlite3.Connection, user_id: str, after_seq: int = 0
) -> list[EventRow]:
    return connection.execute(
        f"SELECT {EVENT_COLUMNS} FROM user_events u JOIN events e ON e.seq = u.seq"
        " WHERE u.user_id = ? AND u.seq > ? ORDER BY u.seq",
        (user_id, after_seq),
    ).fetchall()


def rows_by_seq(
    connection: sqlite3.Connection, user_id: str, seqs: Iterable[int]
) -> list[EventRow]:
    """The user's rows among ``seqs`` that exist in this snapshot, by seq."""
    return connection.execute(
        f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq IN"
        " (SELECT value FROM json_each(?)) AND e.user_id = ? ORDER BY e.seq",
        (json.dumps(list(seqs)), user_id),
    ).fetchall()


class RecentByUser:
    """Seqs of the tail's events by user, for one process (see the module docstring).

    Covers seqs in (floor, known]: every event in that range stored in any snapshot whose
    latest erasure is ``erasure`` or later is listed under its user (entries of rows
    deleted since may linger; they are filtered on read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded = False
        self._floor = 0
        self._known = 0
        self._erasure = 0
        self._seqs: dict[str, list[int]] = {}

    def rows(
        self, connection: sqlite3.Connection, user_id: str, upto: int, last: int, erasure: int
    ) -> list[EventRow]:
        """The user's rows with seq in (upto, last], read in ``connection``'s open read
        transaction, in which ``upto``, ``last`` and ``erasure`` (the latest erasure id)
        were read."""
        with self._lock:
            if not self._loaded:
                self._loaded, self._floor, self._known, self._seqs = True, upto, upto, {}
                self._erasure = erasure
            if self._floor > upto or erasure < self._erasure:
                # A merge or an erasure since this snapshot began took entries it may
                # still need: scan its tail.
                seqs: list[int] | None = None
            else:
                self._erasure = erasure
                if self._floor < upto:  # another process merged: drop what it indexed
                    self._trim(upto)
                if self._known < last:
                    self._add(
                        connection.execute(
                            "SELECT user_id, seq FROM events WHERE seq > ? AND seq <= ?"
                            " ORDER BY seq",
                            (self._known, last),
                        ),
                        last,
                    )
                seqs = [s for s in self._seqs.get(user_id, ()) if upto < s <= last]
        if seqs is None:
            return connection.execute(
                f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > ? AND e.seq <= ?"
                " AND e.user_id = ? ORDER BY e.seq",
                (upto, last, user_id),
            ).fetchall()
        return rows_by_seq(connection, user_id, seqs) if seqs else []

    def appended(self, before: int, last: int, users: Iterable[str]) -> None:
        """The writer committed events numbered before+1..last, whose users are ``users``
        in seq order. Ignored unless the map covers exactly up to ``before`` (otherwise
        the next read catches up from the store)."""
        with self._lock:
            if self._loaded and self._known == before:
                self._add(zip(users, range(before + 1, last + 1), strict=True), last)

    def merged(self, upto: int) -> None:
        """The writer committed a merge up to ``upto``."""
        with self._lock:
            if self._loaded:
                self._trim(upto)

    def erased(self, user_id: str, seqs: Iterable[int], erasure: int) -> None:
        """Erasure ``erasure`` committed, deleting the user's rows ``seqs``: drop exactly
        those entries (an event of the user stored since, by any process, stays)."""
        with self._lock:
            if not self._loaded:
                return
            self._erasure = max(self._erasure, erasure)
            gone = set(seqs)
            kept = [s for s in self._seqs.get(user_id, ()) if s not in gone]
            if kept:
                self._seqs[user_id] = kept
            else:
                self._seqs.pop(user_id, None)

    def _add(self, pairs: Iterable[tuple[str, int]], known: int) -> None:
        table = self._seqs
        for user, seq in pairs:
            seqs = table.get(user)
            if seqs is None:
                table[user] = [seq]
            else:
                seqs.append(seq)
        self._known = known

    def _trim(self, floor: int) -> None:
        kept = {}
        for user, seqs in self._seqs.items():
            newer = [s for s in seqs if s > floor]
            if newer:
                kept[user] = newer
        self._seqs = kept
        self._floor = floor
        self._known = max(self._known, floor)
