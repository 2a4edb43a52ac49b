"""The device's durable outbox: every tracked event, until the server acknowledged it.

SQLite in WAL mode with ``synchronous=FULL``: ``track`` returns after the event is on
disk, so it survives an app crash. Events keep their client-generated ``event_id`` for
ever, so re-sending after a crash or a cut connection is harmless (the server counts a
duplicate). The outbox doubles as the session history the device reranks with.

Errors: SQLite's (unreadable file, disk full, locked for too long) become
``StorageError`` naming the file; any use after ``close()`` is a ``ClosedError``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shelfrank.core.errors import ClosedError, StorageError
from shelfrank.core.events import EventType, StoredEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    session_id TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | rejected
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, seq);
CREATE TABLE IF NOT EXISTS device_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"{path}: cannot open the outbox: {exc}") from exc
        try:
            with self._storage():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA secure_delete=ON")  # wiped rows are overwritten
                self._db.executescript(_SCHEMA)
                self._db.commit()
        except BaseException:
            self._db.close()
            raise

    @contextmanager
    def _storage(self) -> Iterator[None]:
        """SQLite's errors as StorageError naming the file (callers hold the lock)."""
        if self._closed:
            raise ClosedError(f"{self.path}: the outbox is closed")
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._storage():
            yield self._db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._storage():
            try:
                yield self._db
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise

    def add(self, event: StoredEvent) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO outbox (event_id, user_id, item_id, event_type,"
                " timestamp_ms, session_id, query) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.user_id,
                    event.item_id,
                    int(event.event_type),
                    event.timestamp_ms,
                    event.session_id,
                    event.query,
                ),
            )

    def pending(self, limit: int) -> list[StoredEvent]:
        with self._read():
            rows = self._db.execute(
                "SELECT event_id, user_id, item_id, event_type, timestamp_ms, session_id, query"
                " FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [_event(row) for row in rows]

    def mark(self, event_ids: Sequence[str], state: str, note: str = "") -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET state = ?, note = ? WHERE event_id = ?",
                [(state, note, e) for e in event_ids],
            )

    def counts(self) -> dict[str, int]:
        with self._read():
            rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            return {state: int(count) for state, count in rows}

    def recent(self, since_ms: int, limit: int) -> list[StoredEvent]:
        """Events since ``since_ms``, oldest first, at most the last ``limit``."""
        with self._read():
            rows = self._db.execute(
                "SELECT event_id, user_id, item_id, event_type, timestamp_ms, session_id, query"
                " FROM outbox WHERE timestamp_ms >= ? ORDER BY seq DESC LIMIT ?",
                (since_ms, limit),
            ).fetchall()
        return [_event(row) for row in reversed(rows)]

    def consumed_items(self) -> set[str]:
        """Items this device's user purchased or dismissed."""
        with self._read():
            rows = self._db.execute(
                "SELECT DISTINCT item_id FROM outbox WHERE event_type IN (?, ?)",
                (int(EventType.PURCHASE), int(EventType.DISMISS)),
            ).fetchall()
        return {row[0] for row in rows}

    def purged_erasure(self) -> int:
        """The server erasure this device last purged for (0: none)."""
        with self._read():
            row = self._db.execute(
                "SELECT value FROM device_state WHERE key = 'purged_erasure'"
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def wipe(self, erasure_id: int | None = None) -> None:
        """Delete every event and shrink the files (the user asked to be forgotten). With
        ``erasure_id``, also record in the same transaction that this server erasure has
        been purged for, so it is purged for exactly once."""
        with self._tx() as db:
            db.execute("DELETE FROM outbox")
            if erasure_id is not None:
                # Never backwards: a 0 from an older server must not undo a recorded id.
                db.execute(
                    "INSERT INTO device_state (key, value) VALUES ('purged_erasure', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                    (erasure_id,),
                )
        with self._read() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")

    def close(self) -> None:
        """Close the database; closing twice is harmless, any other use afterwards a
        ClosedError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def _event(row: Sequence[object]) -> StoredEvent:
    return StoredEvent(
        event_id=str(row[0]),
        user_id=str(row[1]),
        item_id=str(row[2]),
        event_type=EventType(int(str(row[3]))),
        timestamp_ms=int(str(row[4])),
        session_id=str(row[5]),
        query=str(row[6]),
    )
