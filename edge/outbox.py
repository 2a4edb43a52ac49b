"""The device's durable outbox: every tracked event and every list the device showed
(an impression), until the server acknowledged it. Acknowledged events stay as long as the
device ranks with them (the latest ones, and each item's latest purchase or dismissal;
``prune_acknowledged``).

SQLite in WAL mode with ``synchronous=FULL``: ``track`` returns after the event is on
disk, so it survives an app crash. Events keep their client-generated ``event_id`` for
ever, so re-sending after a crash or a cut connection is harmless (the server counts a
duplicate). The outbox doubles as the session history the device reranks with.
Impressions are keyed by their ``recommendation_id`` the same way (the server dedupes
``ReportShown`` by it); acknowledged ones are deleted, and at most
``MAX_QUEUED_IMPRESSIONS`` wait (the oldest go first), so a server that never takes them
cannot fill the device.

Schema versions (``PRAGMA user_version``): 0 is the first one (``outbox`` without
``recommendation_id``/``position``, no ``impressions``); opening migrates it in one
transaction. A database from a newer version is refused.

Errors: SQLite's (unreadable file, disk full, locked for too long) become
``StorageError`` naming the file; any use after ``close()`` is a ``ClosedError``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shelfrank.client.types import Impression
from shelfrank.core.errors import ClosedError, StorageError
from shelfrank.core.events import EventType, StoredEvent

SCHEMA_VERSION = 1
MAX_QUEUED_IMPRESSIONS = 10_000

# The current schema; a database of version 0 gets the missing tables from here and the
# missing outbox columns from _ADDED_COLUMNS.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    session_id TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | rejected
    note TEXT NOT NULL DEFAULT '',
    recommendation_id TEXT NOT NULL DEFAULT '',
    position INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, seq)",
    "CREATE TABLE IF NOT EXISTS device_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS impressions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recommendation_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_ids TEXT NOT NULL,  -- a JSON array, in shown order
    timestamp_ms INTEGER NOT NULL,
    surface TEXT NOT NULL,
    experiment TEXT NOT NULL DEFAULT '',
    variant TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | rejected (acknowledged: deleted)
    note TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX IF NOT EXISTS impressions_pending ON impressions (state, seq)",
)
_ADDED_COLUMNS = (
    (
        "recommendation_id",
        "ALTER TABLE outbox ADD COLUMN recommendation_id TEXT NOT NULL DEFAULT ''",
    ),
    ("position", "ALTER TABLE outbox ADD COLUMN position INTEGER NOT NULL DEFAULT 0"),
)
_EVENT_COLUMNS = (
    "event_id, user_id, item_id, event_type, timestamp_ms, session_id, query,"
    " recommendation_id, position"
)
_IMPRESSION_COLUMNS = (
    "recommendation_id, user_id, item_ids, timestamp_ms, surface, experiment, variant,"
    " model_version"
)


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
                self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Bring the database to SCHEMA_VERSION, all or nothing (SQLite's DDL is
        transactional), under a write lock so two processes cannot both migrate."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path}: outbox schema version {version} is newer than this "
                    f"library's ({SCHEMA_VERSION}); upgrade shelfrank"
                )
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA:
                    db.execute(statement)
                columns = {str(row[1]) for row in db.execute("PRAGMA table_info(outbox)")}
                for column, statement in _ADDED_COLUMNS:
                    if column not in columns:
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.commit()
        except BaseException:
            db.rollback()
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
                f"INSERT OR IGNORE INTO outbox ({_EVENT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.user_id,
                    event.item_id,
                    int(event.event_type),
                    event.timestamp_ms,
                    event.session_id,
                    event.query,
                    event.recommendation_id,
                    event.position,
                ),
            )

    def pending(self, limit: int) -> list[StoredEvent]:
        with self._read():
            rows = self._db.execute(
                f"SELECT {_EVENT_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [_event(row) for row in rows]

    def mark(self, event_ids: Sequence[str], state: str, note: str = "") -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET state = ?, note = ? WHERE event_id = ?",
                [(state, note, e) for e in event_ids],
            )

    def prune_acknowledged(self, keep_recent: int) -> int:
        """Deletes the events the server acknowledged or refused that the device no longer
        needs: all but the latest ``keep_recent`` events (the session history) and the
        latest purchase or dismissal of each item (what ``consumed_items`` reads). Without
        it every event ever tracked would stay, and the file and each ranking's reads grow
        with them. Returns how many were deleted."""
        consumed = (int(EventType.PURCHASE), int(EventType.DISMISS))
        with self._tx() as db:
            deleted = db.execute(
                "DELETE FROM outbox WHERE state != 'pending'"
                " AND seq <= (SELECT COALESCE(MAX(seq), 0) FROM outbox) - ?"
                " AND (event_type NOT IN (?, ?) OR seq NOT IN"
                "  (SELECT MAX(seq) FROM outbox WHERE event_type IN (?, ?) GROUP BY item_id))",
                (keep_recent, *consumed, *consumed),
            ).rowcount
        return int(deleted)

    def counts(self) -> dict[str, int]:
        with self._read():
            rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            return {state: int(count) for state, count in rows}

    def recent(self, since_ms: int, limit: int) -> list[StoredEvent]:
        """Events since ``since_ms``, oldest first, at most the last ``limit``."""
        with self._read():
            rows = self._db.execute(
                f"SELECT {_EVENT_COLUMNS} FROM outbox WHERE timestamp_ms >= ?"
                " ORDER BY seq DESC LIMIT ?",
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

    # -- impressions ------------------------------------------------------------------
    def add_impression(self, impression: Impression) -> None:
        """Queue a shown list (a repeated recommendation id is ignored), dropping the
        oldest pending ones beyond MAX_QUEUED_IMPRESSIONS."""
        with self._tx() as db:
            db.execute(
                f"INSERT OR IGNORE INTO impressions ({_IMPRESSION_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    impression.recommendation_id,
                    impression.user_id,
                    json.dumps(impression.item_ids, ensure_ascii=False),
                    impression.timestamp_ms,
                    impression.surface,
                    impression.experiment,
                    impression.variant,
                    impression.model_version,
                ),
            )
            db.execute(
                "DELETE FROM impressions WHERE state = 'pending' AND seq <= ("
                " SELECT seq FROM impressions WHERE state = 'pending'"
                " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (MAX_QUEUED_IMPRESSIONS,),
            )

    def pending_impressions(self, limit: int) -> list[Impression]:
        with self._read():
            rows = self._db.execute(
                f"SELECT {_IMPRESSION_COLUMNS} FROM impressions WHERE state = 'pending'"
                " ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [_impression(row) for row in rows]

    def acknowledge_impressions(self, recommendation_ids: Sequence[str]) -> None:
        """The server has these (new or duplicate): they leave the device."""
        with self._tx() as db:
            db.executemany(
                "DELETE FROM impressions WHERE recommendation_id = ?",
                [(key,) for key in recommendation_ids],
            )

    def reject_impression(self, recommendation_id: str, note: str) -> None:
        """The server refused it: kept with the reason, never sent again."""
        with self._tx() as db:
            db.execute(
                "UPDATE impressions SET state = 'rejected', note = ? WHERE recommendation_id = ?",
                (note, recommendation_id),
            )

    def impression_counts(self) -> dict[str, int]:
        with self._read():
            rows = self._db.execute("SELECT state, COUNT(*) FROM impressions GROUP BY state")
            return {state: int(count) for state, count in rows}

    def purged_erasure(self) -> int:
        """The server erasure this device last purged for (0: none)."""
        with self._read():
            row = self._db.execute(
                "SELECT value FROM device_state WHERE key = 'purged_erasure'"
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def wipe(self, erasure_id: int | None = None) -> None:
        """Delete every event and impression and shrink the files (the user asked to be
        forgotten). With
        ``erasure_id``, also record in the same transaction that this server erasure has
        been purged for, so it is purged for exactly once."""
        with self._tx() as db:
            db.execute("DELETE FROM outbox")
            db.execute("DELETE FROM impressions")
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
        recommendation_id=str(row[7]),
        position=int(str(row[8])),
    )


def _impression(row: Sequence[object]) -> Impression:
    return Impression(
        str(row[0]),
        json.loads(str(row[2])),
        user_id=str(row[1]),
        timestamp_ms=int(str(row[3])),
        surface=str(row[4]),
        experiment=str(row[5]),
        variant=str(row[6]),
        model_version=str(row[7]),
    )
