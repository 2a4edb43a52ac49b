"""The embedded store (``shelfrank.server.storage.EventStore`` on SQLite), the default.

Durable, idempotent storage of behaviour events, catalogue items and user profiles: one
SQLite file in WAL mode with ``synchronous=FULL``, so a batch is on disk when
:meth:`SQLiteStore.append_events` returns (an acknowledged event survives a crash of the
process or the machine). ``event_id`` is the primary key: the same id again is a
duplicate and changes nothing, also after a restart. Events of an erased user are
remembered by id only (``erased_events``), so replaying them cannot resurrect the
profile.

Events are found by user through ``user_events``, merged in bulk, plus this process's map
of the newest events (user_events.py). Schema 2 (that form) is made from a schema 1 store
when it is opened; stop every process using the file before the first open by this
version (a schema 1 process still writing would leave the new index stale).

Concurrency: one writer connection serialised by a lock, which is also a lock on a file
next to the database, so several processes sharing the file write in turn without
SQLite's polling (writer_lock.py; see user_events.py); every read opens its own
short-lived connection (WAL readers never block the writer and see only committed data).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

from shelfrank.core.errors import InvalidInputError, StorageError, UnknownIdError
from shelfrank.core.events import EventType, StoredEvent, user_id_of
from shelfrank.server.storage import (
    AppendResult,
    AuditEntry,
    AvailabilityResult,
    CatalogueEntry,
    EvaluationInfo,
    Impression,
    ImpressionKind,
    LeaseLostError,
    ModelFiles,
    ModelPointer,
    ReplicaSample,
    StoreCounts,
    UserView,
)
from shelfrank.server.store_common import (
    CONTEXT_COLUMNS,
    IMPRESSION_KINDS,
    INT64_MAX,
    INT64_MIN,
    KIND_CODES,
    SAMPLE_RETENTION_MS,
    TOKEN_SEPARATOR,
    GroupCommit,
    ImpressionContext,
    PendingBatch,
    ShownDeltas,
    StoredRecords,
    check_audit,
    check_evaluation_key,
    checked_evaluation,
    checked_limit,
    clamped_range,
    context_of,
    count_list,
    day_sql,
    erasure_checked_users,
    errors_mapped,
    first_day,
    first_new,
    impression_contexts,
    item_feedback_sql,
    joined_chunks,
    model_chunks,
    not_erased,
    not_of_erased_responses,
    sample_figures,
    shown_deltas,
    split_tokens,
    stored_impression,
    stored_sample,
    unstorable_text,
    user_hash,
    with_served_users,
)
from shelfrank.server.user_events import (
    MERGE_EVERY,
    UPTO_KEY,
    UPTO_SQL,
    EventRow,
    RecentByUser,
    indexed_rows,
    merge,
    merged_upto,
    seqs_of,
)
from shelfrank.server.writer_lock import WriterLock

# 2: events are indexed by user in bulk (user_events, see user_events.py), not per insert.
# 3: catalogue items carry the revision that last wrote them (meta.catalogue_revision).
# 4: catalogue items carry their availability and when they were first stored.
# 5: events carry the response they answer (recommendation_id, position); impressions.
# 6: model versions pinned in the store (model_pins), never pruned.
# 7: the dashboard's replica samples, audit log and saved evaluations.
# 8: per-item daily counters of impressions and clicks (item_days), kept at write time.
# 9: catalogue items carry an integer key (item_key), given once and never reused.
SCHEMA_VERSION = 10
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    session_id TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    recommendation_id TEXT NOT NULL DEFAULT '',
    position INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS user_events (user_id TEXT NOT NULL, seq INTEGER NOT NULL,
                                        PRIMARY KEY (user_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erased_events (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erased_recommendations (recommendation_id TEXT PRIMARY KEY)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erased_users (user_hash TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erasures (erasure_id INTEGER PRIMARY KEY, user_hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS erasures_by_user ON erasures (user_hash, erasure_id);
CREATE TABLE IF NOT EXISTS items (item_id TEXT PRIMARY KEY, features TEXT NOT NULL,
                                  updated_ms INTEGER NOT NULL,
                                  revision INTEGER NOT NULL DEFAULT 0,
                                  available INTEGER NOT NULL DEFAULT 1,
                                  added_ms INTEGER NOT NULL DEFAULT 0,
                                  tokens_revision INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, features TEXT NOT NULL,
                                  updated_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (version TEXT PRIMARY KEY, saved INTEGER NOT NULL UNIQUE,
                                   saved_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS model_files (version TEXT NOT NULL, path TEXT NOT NULL,
                                        chunk INTEGER NOT NULL, data BLOB NOT NULL,
                                        PRIMARY KEY (version, path, chunk)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_pointer (id INTEGER PRIMARY KEY CHECK (id = 1),
                                          version TEXT NOT NULL, published INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL,
                                   expires_ms INTEGER NOT NULL) WITHOUT ROWID;
-- Schema 6 (created by this script in older stores). A pin names a stored model: deleting
-- a pinned version fails (a process that does not read pins cannot prune it either).
CREATE TABLE IF NOT EXISTS model_pins (owner TEXT NOT NULL,
                                       version TEXT NOT NULL REFERENCES models (version),
                                       PRIMARY KEY (owner, version)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS model_pins_by_version ON model_pins (version);
CREATE TABLE IF NOT EXISTS impression_contexts (
    context_id INTEGER PRIMARY KEY, surface TEXT NOT NULL, experiment TEXT NOT NULL,
    variant TEXT NOT NULL, model_version TEXT NOT NULL,
    UNIQUE (surface, experiment, variant, model_version));
-- A rowid table: WITHOUT ROWID would put the whole rows in the B-tree of the (random)
-- recommendation ids, which random inserts leave part empty (measured with 10 items each:
-- 2% more bytes per impression, less than half the impressions stored per second). No
-- index by user: see delete_user.
CREATE TABLE IF NOT EXISTS impressions (
    recommendation_id TEXT NOT NULL,
    kind INTEGER NOT NULL,  -- store_common.KIND_CODES
    user_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    context_id INTEGER NOT NULL,  -- impression_contexts
    items TEXT NOT NULL,  -- item ids in shown order, joined by TOKEN_SEPARATOR
    PRIMARY KEY (recommendation_id, kind));
CREATE INDEX IF NOT EXISTS impressions_by_time ON impressions (time_ms);
-- Schema 7 (created by this script in older stores): the dashboard's tables. A replica's
-- load samples (figures: JSON, see store_common.sample_figures), kept 24 h.
CREATE TABLE IF NOT EXISTS replica_samples (replica TEXT NOT NULL, time_ms INTEGER NOT NULL,
                                            figures TEXT NOT NULL,
                                            PRIMARY KEY (replica, time_ms)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replica_samples_by_time ON replica_samples (time_ms);
-- Changes made by hand, read per target newest first; audit_id orders entries of one ms.
CREATE TABLE IF NOT EXISTS audit (audit_id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,
                                  actor TEXT NOT NULL, action TEXT NOT NULL,
                                  target TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit (target, time_ms, audit_id);
-- Saved offline evaluations, their files in chunks as model_files; saved orders them.
CREATE TABLE IF NOT EXISTS evaluations (name TEXT PRIMARY KEY, saved INTEGER NOT NULL UNIQUE,
                                        saved_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evaluation_files (name TEXT NOT NULL, file TEXT NOT NULL,
                                             chunk INTEGER NOT NULL, data BLOB NOT NULL,
                                             PRIMARY KEY (name, file, chunk)) WITHOUT ROWID;
-- Schema 8 (created by this script in older stores, then counted: _count_item_days). How
-- often each item was shown and clicked per UTC day (day: time_ms // DAY_MS), kept by
-- record_impressions and append_events in their transactions (store_common.shown_deltas,
-- _COUNT_CLICKS); anonymous aggregates that an erasure leaves. Keyed by day first: a
-- day's writes stay in its few pages however long the history. Keyed by item first, each
-- item's days share pages and a batch dirties a page per item it counts (measured:
-- record_impressions of 10-item lists out of 100,000 items with 30 days stored, 4,100
-- impressions/s against 29,000; out of 2,000 items, 44,000 against 78,000). A read by
-- item seeks the days present (store_common.item_feedback_sql).
CREATE TABLE IF NOT EXISTS item_days (day INTEGER NOT NULL, item_id TEXT NOT NULL,
                                      shown INTEGER NOT NULL DEFAULT 0,
                                      clicked INTEGER NOT NULL DEFAULT 0,
                                      PRIMARY KEY (day, item_id)) WITHOUT ROWID;
"""
_CATALOGUE_KEY = "catalogue_revision"
_CATALOGUE_SQL = f"(SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{_CATALOGUE_KEY}')"
# A new item's key (an update keeps its own): the largest + 1, read from the unique index.
_NEXT_ITEM_KEY = "(SELECT COALESCE(MAX(item_key), 0) + 1 FROM items)"
# Inserts events unless their id is stored already (OR IGNORE on the UNIQUE index), in
# the given order (seqs follow it). Each row's parameters are a StoredEvent's fields, in
# order. One statement binds a whole batch: SQLite steps once instead of once per row
# (executemany), half the insert's cost, and the writer gives up and retakes the GIL once
# (each retake can wait for a Python thread, so fewer is faster under concurrent calls).
# A statement has a power-of-two number of rows, so a connection caches at most eleven;
# the rows beyond the batch are all NULL and filtered out before insertion (no seq).
_INSERT_HEAD = (
    "INSERT OR IGNORE INTO events (event_id, user_id, item_id, event_type, timestamp_ms,"
    " session_id, query, recommendation_id, position) SELECT * FROM (VALUES "
)
_INSERT_TAIL = ") WHERE column1 IS NOT NULL"
_MAX_ROWS_PER_INSERT = 1024  # 9,216 variables: well under SQLite's 32,766
# Bound as its number: the default path for an int subclass looks for __conform__ first.
sqlite3.register_adapter(EventType, int)
# Writer tuning (see SQLiteStore.__init__); also used by benchmarks/ingest.py's raw floor.
WRITER_CACHE_KIB = 65536
WAL_CHECKPOINT_PAGES = 10000
WAL_SIZE_LIMIT_BYTES = 64 * 2**20
# The clicks of the events stored after a seq (those of this transaction, or all of them)
# counted in item_days: a VIEW answering a stored impression (served or shown) that holds
# its item and names its user or none. A primary-key lookup per such event; one upsert
# per (item, day).
_SEPARATOR_SQL = f"char({ord(TOKEN_SEPARATOR)})"
_COUNT_CLICKS = f"""
INSERT INTO item_days (item_id, day, shown, clicked)
SELECT e.item_id, {day_sql("e.timestamp_ms")}, 0, COUNT(*) FROM events e
WHERE e.seq > ? AND e.event_type = {int(EventType.VIEW)} AND e.recommendation_id <> ''
  AND e.item_id <> '' AND EXISTS (
    SELECT 1 FROM impressions i WHERE i.recommendation_id = e.recommendation_id
    AND i.user_id IN (e.user_id, '')
    AND instr({_SEPARATOR_SQL} || i.items || {_SEPARATOR_SQL},
              {_SEPARATOR_SQL} || e.item_id || {_SEPARATOR_SQL}) > 0)
GROUP BY 1, 2
ON CONFLICT (day, item_id) DO UPDATE SET clicked = item_days.clicked + excluded.clicked
"""
# Counts added to item_days: (item_id, day, shown) rows bound in one statement, as events
# (see _INSERT_HEAD; measured: 2.9 ms for 2,000 counts, executemany 3.9 ms), padded with
# NULL rows.
_COUNT_SHOWN_HEAD = "INSERT INTO item_days (item_id, day, shown) SELECT * FROM (VALUES "
_COUNT_SHOWN_TAIL = (
    ") WHERE column1 IS NOT NULL"
    " ON CONFLICT (day, item_id) DO UPDATE SET shown = item_days.shown + excluded.shown"
)
_MAX_COUNTS_PER_UPSERT = 2048  # 6,144 variables
# A SERVED record taking back what its id's SHOWN one counted (store_common.shown_deltas);
# never below 0.
_UNCOUNT_SHOWN = "UPDATE item_days SET shown = MAX(0, shown + ?) WHERE item_id = ? AND day = ?"
_ITEM_FEEDBACK = item_feedback_sql(":since", ":item")
_COLUMNS = len(StoredEvent._fields)  # of the events table, as inserted
_EVENT_FIELDS = ", ".join(StoredEvent._fields)  # the events table's columns, as a StoredEvent
_SPARE_READERS = 32  # read connections kept open between reads (about one per thread)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _describe(store: Any, method: str, exc: BaseException) -> str:
    return f"event store: {method}: {exc}"


@errors_mapped(sqlite3.Error, _describe)
class SQLiteStore:
    def __init__(self, path: str | Path, *, merge_every: int = MERGE_EVERY) -> None:
        """``merge_every``: events after the user index's watermark that trigger a bulk
        merge into it (see user_events.py)."""
        if merge_every < 1:
            raise InvalidInputError(f"merge_every: must be at least 1, got {merge_every}")
        self._merge_every = merge_every
        self._recent = RecentByUser()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The writer connection and the commit, across this file's processes too.
        self._lock = WriterLock(self.path.with_name(self.path.name + ".writer-lock"))
        self._spare: list[sqlite3.Connection] = []  # read connections between reads
        self._spare_lock = threading.Lock()
        self._closed = False
        self._group_commit = GroupCommit(self._lock)
        try:
            self._writer = self._connect()
        except BaseException:
            self._lock.close()
            raise
        try:
            self._open_schema()
        except BaseException:  # a store that cannot open leaves no connection or lock file open
            self._writer.close()
            self._lock.close()
            raise

    def _open_schema(self) -> None:
        """Creates or migrates the schema in one write transaction."""
        with self._lock:
            self._writer.execute("PRAGMA journal_mode=WAL")
            # Ingest cost is dominated by index pages written per commit. A larger writer
            # cache and a rarer checkpoint let consecutive batches dirty the same pages
            # instead of re-reading and re-checkpointing them: 1.6x the events/s at 400k
            # stored events (benchmarks/RESULTS.md, "Ingest"). The WAL is truncated back to
            # 64 MiB after each checkpoint; after a kill -9 the next open reads at most
            # ~40 MiB of it.
            self._writer.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self._writer.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._writer.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            self._writer.executescript(_SCHEMA)
            row = self._writer.execute(
                "SELECT value FROM meta WHERE key='schema_version'"
            ).fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path}: store schema {row[0]} is newer than this shelfrank "
                    f"({SCHEMA_VERSION})"
                )
            # Stores written before erasures were numbered: each erased user gets an id.
            self._writer.execute(
                "INSERT INTO erasures (user_hash) SELECT user_hash FROM erased_users"
                " WHERE user_hash NOT IN (SELECT user_hash FROM erasures)"
            )
            self._index_users_in_bulk()
            self._number_catalogue_revisions()
            self._key_items()
            self._add_attribution_columns()
            if row is not None and int(row[0]) < 8:
                self._count_item_days()
            self._writer.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._writer.commit()

    def _index_users_in_bulk(self) -> None:
        """Schema 1 indexed every event by user as it was inserted (``events_by_user``):
        its events move into user_events in one merge and the index goes, in the opening
        transaction. A new store starts with the watermark at 0."""
        self._writer.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '0')", (UPTO_KEY,))
        old_index = self._writer.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'events_by_user'"
        ).fetchone()
        if old_index is not None:
            last = self._writer.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            merge(self._writer, merged_upto(self._writer), int(last))
            self._writer.execute("DROP INDEX events_by_user")

    def _number_catalogue_revisions(self) -> None:
        """Schema 2 items had no revision: they all become revision 1 (0 is "before any
        upsert"). Schema 3 items had no availability, add time or tokens' revision: they
        are available, added when last updated, their tokens of their revision."""
        columns = {row[1] for row in self._writer.execute("PRAGMA table_info(items)")}
        if "revision" not in columns:
            self._writer.execute("ALTER TABLE items ADD COLUMN revision INTEGER NOT NULL DEFAULT 0")
            self._writer.execute("UPDATE items SET revision = 1")
        self._writer.execute(
            f"INSERT OR IGNORE INTO meta(key, value) VALUES ('{_CATALOGUE_KEY}',"
            " (SELECT CAST(COALESCE(MAX(revision), 0) AS TEXT) FROM items))"
        )
        self._writer.execute(
            "CREATE INDEX IF NOT EXISTS items_by_revision ON items (revision, item_id)"
        )
        if "available" not in columns:  # schema 3 and before: every item was available
            self._writer.execute(
                "ALTER TABLE items ADD COLUMN available INTEGER NOT NULL DEFAULT 1"
            )
            self._writer.execute("ALTER TABLE items ADD COLUMN added_ms INTEGER NOT NULL DEFAULT 0")
            self._writer.execute("UPDATE items SET added_ms = updated_ms")
        if "tokens_revision" not in columns:  # tokens last written with the last revision
            self._writer.execute(
                "ALTER TABLE items ADD COLUMN tokens_revision INTEGER NOT NULL DEFAULT 0"
            )
            self._writer.execute("UPDATE items SET tokens_revision = revision")

    def _key_items(self) -> None:
        """Schema 8 items had no integer key: they are numbered 1.. in (revision, item id)
        order; later items take the largest key + 1 (the unique index finds it)."""
        columns = {row[1] for row in self._writer.execute("PRAGMA table_info(items)")}
        if "item_key" not in columns:
            self._writer.execute("ALTER TABLE items ADD COLUMN item_key INTEGER NOT NULL DEFAULT 0")
            self._writer.execute(
                "UPDATE items SET item_key = numbered.key FROM (SELECT item_id,"
                " ROW_NUMBER() OVER (ORDER BY revision, item_id) AS key FROM items) AS numbered"
                " WHERE items.item_id = numbered.item_id"
            )
        self._writer.execute("CREATE UNIQUE INDEX IF NOT EXISTS items_by_key ON items (item_key)")

    def _add_attribution_columns(self) -> None:
        """Events of schema 4 and before answer no known response: recommendation id ""
        and position 0 (a constant default: SQLite rewrites no row to add the columns)."""
        columns = {row[1] for row in self._writer.execute("PRAGMA table_info(events)")}
        if "recommendation_id" not in columns:
            self._writer.execute(
                "ALTER TABLE events ADD COLUMN recommendation_id TEXT NOT NULL DEFAULT ''"
            )
        if "position" not in columns:
            self._writer.execute(
                "ALTER TABLE events ADD COLUMN position INTEGER NOT NULL DEFAULT 0"
            )

    def _count_item_days(self) -> None:
        """Schema 7 and before kept no per-item counters: they are counted from the stored
        impressions (by store_common.shown_deltas's rule: each recommendation id's SERVED
        record, else its SHOWN one) and events, in the opening transaction (a scan of
        both, once)."""
        deltas: dict[tuple[str, int], int] = {}  # (item, day) -> shown
        served = KIND_CODES[ImpressionKind.SERVED]
        cursor = self._writer.execute(
            "SELECT time_ms, items FROM impressions i WHERE kind = ?1 OR NOT EXISTS"
            " (SELECT 1 FROM impressions s WHERE s.recommendation_id = i.recommendation_id"
            " AND s.kind = ?1)",
            (served,),
        )
        while rows := cursor.fetchmany(10_000):
            for time_ms, items in rows:
                count_list(deltas, split_tokens(items), int(time_ms))
            if len(deltas) >= 1_000_000:  # a bounded dict: added up in the table
                self._count_shown([(item, day, n) for (item, day), n in deltas.items()])
                deltas = {}
        self._count_shown([(item, day, n) for (item, day), n in deltas.items()])
        self._writer.execute(_COUNT_CLICKS, (0,))

    def _count_shown(self, deltas: ShownDeltas) -> None:
        """Add ``deltas`` to item_days, in the writer's transaction."""
        added = [row for row in deltas if row[2] > 0]
        for start in range(0, len(added), _MAX_COUNTS_PER_UPSERT):
            chunk = added[start : start + _MAX_COUNTS_PER_UPSERT]
            size = 1 << (len(chunk) - 1).bit_length()  # the next power of two
            params = (*chain.from_iterable(chunk), *(None,) * (3 * (size - len(chunk))))
            self._writer.execute(_count_shown_statement(size), params)
        if len(added) < len(deltas):
            self._writer.executemany(
                _UNCOUNT_SHOWN, [(d, item, day) for item, day, d in deltas if d < 0]
            )

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=30.0, check_same_thread=False, isolation_level="DEFERRED"
        )
        connection.execute("PRAGMA synchronous=FULL")  # durable at commit, WAL included
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten on disk
        return connection

    def close(self) -> None:
        with self._spare_lock:
            if self._closed:
                return
            self._closed = True
            spare, self._spare = self._spare, []
        for connection in spare:
            connection.close()
        with self._lock:
            self._writer.commit()
            self._writer.close()
        self._lock.close()

    # -- writes -------------------------------------------------------------------------------
    def append_events(
        self, events: Sequence[StoredEvent], *, erasure_seen: int | None = None
    ) -> AppendResult:
        """Store new events durably; report duplicates by position.

        An id seen earlier in the same batch, already stored, or belonging to an erased
        user's history is a duplicate. With ``erasure_seen`` (a device's last purged
        erasure, see latest_erasure), events of a user erased after it are refused, in the
        same transaction as the insert: they were recorded before the sender knew of the
        erasure, and an erasure committed at any moment before is seen.

        Group commit: batches that arrive while a commit is in progress are written
        together in the next transaction (one fsync for all), in arrival order. Every
        caller returns only after the transaction holding its batch is committed; if that
        transaction fails, every batch in it fails and none is stored.
        """
        return self._group_commit.append(events, erasure_seen, self._append_group)

    def _append_group(self, group: Sequence[PendingBatch]) -> list[AppendResult]:
        """One transaction for all batches in ``group``; the caller holds the writer lock.

        The insert itself skips duplicates (ids stored before or earlier in the group, ids
        of erased users' events), so the common all-new group costs one statement and no
        lookup; only when rows were skipped do we read back which ones were stored."""
        try:
            # Write-locked from the first read, so another process writing the same file
            # (an import next to the server) cannot slip rows in between.
            self._writer.execute("BEGIN IMMEDIATE")
            kept = [self._not_erased_since(p.events, p.erasure_seen) for p in group]
            batches = [
                p.events if keep is None else [p.events[i] for i in keep]
                for p, keep in zip(group, kept, strict=True)
            ]
            total = sum(len(batch) for batch in batches)
            before, any_erased, upto = self._writer.execute(
                "SELECT COALESCE(MAX(seq), 0), EXISTS (SELECT 1 FROM erased_events),"
                f" {UPTO_SQL} FROM events"
            ).fetchone()
            rows = list(chain.from_iterable(batches))
            if any_erased:  # ids of erased users' events are duplicates forever
                rows = self._without_erased_ids(rows)
            stored, last_inserted = self._insert(rows)
            # Seqs only grow, so the last row inserted has the highest (no statement, which
            # would give up and retake the GIL once more under the writer lock).
            last = last_inserted if stored else before
            # All new and numbered before+1.. in order (AUTOINCREMENT with one writer): no
            # read-back. Otherwise read back which ids were stored, and their seqs.
            inserted = None if stored == total == last - before else self._inserted_since(before)
            if stored:  # the new events are those after ``before``
                self._writer.execute(_COUNT_CLICKS, (before,))
            merged = last - upto >= self._merge_every
            if merged:
                merge(self._writer, upto, last)
            self._writer.commit()
        except BaseException:
            self._writer.rollback()
            raise
        if inserted is None:  # numbered before+1..last in order: the users are known
            self._recent.appended(before, last, map(user_id_of, rows))
        if merged:
            self._recent.merged(last)
        results: list[AppendResult] = []
        next_seq = before + 1
        for pending, keep, events in zip(group, kept, batches, strict=True):
            positions = range(len(events)) if keep is None else keep
            refused = (
                () if keep is None else tuple(sorted(set(range(len(pending.events))) - set(keep)))
            )
            if inserted is None:
                count = len(events)
                seqs = tuple(range(next_seq, next_seq + count))
                next_seq += count
                results.append(
                    AppendResult(
                        accepted=tuple(positions), duplicates=(), seqs=seqs, erased=refused
                    )
                )
                continue
            accepted: list[int] = []
            duplicates: list[int] = []
            accepted_seqs: list[int] = []
            for index, event in zip(positions, events, strict=True):
                seq = inserted.pop(event.event_id, None)  # a later copy is a duplicate
                if seq is None:
                    duplicates.append(index)
                else:
                    accepted.append(index)
                    accepted_seqs.append(seq)
            results.append(
                AppendResult(
                    accepted=tuple(accepted),
                    duplicates=tuple(duplicates),
                    seqs=tuple(accepted_seqs),
                    erased=refused,
                )
            )
        return results

    def _insert(self, rows: Sequence[StoredEvent]) -> tuple[int, int]:
        """Insert ``rows`` in order, skipping stored ids; returns how many were stored and
        the connection's last inserted rowid (this call's last row if any was stored)."""
        stored, last_rowid = 0, 0
        for start in range(0, len(rows), _MAX_ROWS_PER_INSERT):
            chunk = rows[start : start + _MAX_ROWS_PER_INSERT]
            size = 1 << (len(chunk) - 1).bit_length()  # the next power of two
            # A StoredEvent is the row itself (its fields are the columns, in order).
            params = (*chain.from_iterable(chunk), *(None,) * (_COLUMNS * (size - len(chunk))))
            cursor = self._writer.execute(_insert_statement(size), params)
            stored += cursor.rowcount
            last_rowid = cursor.lastrowid or last_rowid
        return stored, last_rowid

    def _without_erased_ids(self, rows: list[StoredEvent]) -> list[StoredEvent]:
        erased = {
            row[0]
            for row in self._writer.execute(
                "SELECT event_id FROM erased_events WHERE event_id IN"
                " (SELECT value FROM json_each(?))",
                (json.dumps([event.event_id for event in rows]),),
            )
        }
        return [event for event in rows if event.event_id not in erased] if erased else rows

    def _not_erased_since(
        self, events: Sequence[StoredEvent], erasure_seen: int | None
    ) -> list[int] | None:
        """Positions of ``events`` whose user was not erased after ``erasure_seen`` (None:
        all of them), read inside the writer's transaction."""
        if erasure_seen is None:
            return None
        latest = self._latest_erasures({event.user_id for event in events})
        erased = {user for user, erasure in latest.items() if erasure > erasure_seen}
        if not erased:
            return None
        return [i for i, event in enumerate(events) if event.user_id not in erased]

    def _erased_responses(self, recommendation_ids: set[str]) -> set[str]:
        """Which of ``recommendation_ids`` an erasure deleted (in the write transaction)."""
        rows = self._writer.execute(
            "SELECT recommendation_id FROM erased_recommendations"
            " WHERE recommendation_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(recommendation_ids)),),
        )
        return {str(row[0]) for row in rows}

    def _inserted_since(self, seq: int) -> dict[str, int]:
        rows = self._writer.execute("SELECT event_id, seq FROM events WHERE seq > ?", (seq,))
        return dict(rows.fetchall())

    def record_impressions(self, impressions: Sequence[Impression]) -> int:
        """Store impressions durably; returns how many were new (a repeat of a stored
        (recommendation_id, kind), or of one earlier in the batch, is ignored). SHOWN
        ones naming no user take their SERVED one's user; then those of users erased
        after their ``erasure_seen`` are dropped, before repeats are looked for. The new
        ones are counted in item_days (store_common.shown_deltas) in the same
        transaction."""
        if not impressions:
            return 0
        with self._lock:
            try:
                # Under the write lock from here to the commit: no erasure commits between
                # these reads and the insert.
                self._writer.execute("BEGIN IMMEDIATE")
                stored = self._stored_records({i.recommendation_id for i in impressions})
                impressions = with_served_users(
                    impressions,
                    {
                        rid: user
                        for (rid, kind), (user, _, _) in stored.items()
                        if kind is ImpressionKind.SERVED
                    },
                )
                impressions = not_erased(
                    impressions, self._latest_erasures(erasure_checked_users(impressions))
                )
                impressions = not_of_erased_responses(
                    impressions, self._erased_responses({i.recommendation_id for i in impressions})
                )
                new = first_new(impressions, stored)
                if not new:
                    self._writer.commit()
                    return 0
                context_ids = self._context_ids({context_of(i) for i in new})
                count = self._writer.executemany(
                    "INSERT OR IGNORE INTO impressions (recommendation_id, kind, user_id,"
                    " time_ms, context_id, items) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            impression.recommendation_id,
                            KIND_CODES[impression.kind],
                            impression.user_id,
                            impression.time_ms,
                            context_ids[context_of(impression)],
                            TOKEN_SEPARATOR.join(impression.item_ids),
                        )
                        for impression in new
                    ],
                ).rowcount
                self._count_shown(shown_deltas(new, stored))
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise
        return count

    def _latest_erasures(self, users: set[str]) -> dict[str, int]:
        """Each user's latest erasure id (0: never erased), read by the writer."""
        return {
            user: int(
                self._writer.execute(
                    "SELECT COALESCE(MAX(erasure_id), 0) FROM erasures WHERE user_hash = ?",
                    (user_hash(user),),
                ).fetchone()[0]
            )
            for user in users
        }

    def _stored_records(self, recommendation_ids: set[str]) -> StoredRecords:
        """The stored records of ``recommendation_ids`` by (id, kind): (user, time_ms,
        items), read by the writer (primary-key lookups)."""
        rows = self._writer.execute(
            "SELECT recommendation_id, kind, user_id, time_ms, items FROM impressions"
            " WHERE recommendation_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(recommendation_ids)),),
        )
        return {
            (str(rid), IMPRESSION_KINDS[int(kind)]): (str(user), int(time_ms), split_tokens(items))
            for rid, kind, user, time_ms, items in rows
        }

    def _context_ids(self, contexts: Iterable[ImpressionContext]) -> dict[ImpressionContext, int]:
        """The number of each context, stored first where it is new (in the writer's
        transaction)."""
        wanted = list(contexts)
        self._writer.executemany(
            "INSERT OR IGNORE INTO impression_contexts (surface, experiment, variant,"
            " model_version) VALUES (?, ?, ?, ?)",
            wanted,
        )
        return {
            context: int(
                self._writer.execute(
                    "SELECT context_id FROM impression_contexts WHERE surface = ?"
                    " AND experiment = ? AND variant = ? AND model_version = ?",
                    context,
                ).fetchone()[0]
            )
            for context in wanted
        }

    def upsert_items(self, items: Iterable[tuple[str, Sequence[str]]]) -> int:
        values = [(item, TOKEN_SEPARATOR.join(tokens)) for item, tokens in items]
        if not values:
            return 0
        now = _now_ms()
        with self._lock:
            try:
                # Write-locked from the revision's read: the revisions of the processes
                # sharing the file follow their commits.
                self._writer.execute("BEGIN IMMEDIATE")
                self._writer.execute(
                    f"UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
                    f" WHERE key = '{_CATALOGUE_KEY}'"
                )
                self._writer.executemany(
                    "INSERT INTO items (item_id, features, updated_ms, revision, added_ms,"
                    f" tokens_revision, item_key) VALUES (?, ?, ?, {_CATALOGUE_SQL}, ?,"
                    f" {_CATALOGUE_SQL}, {_NEXT_ITEM_KEY})"
                    " ON CONFLICT(item_id) DO UPDATE SET features=excluded.features,"
                    " updated_ms=excluded.updated_ms, revision=excluded.revision,"
                    " tokens_revision=excluded.tokens_revision",
                    [(item, features, now, now) for item, features in values],
                )
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise
        return len(values)

    def set_availability(self, item_ids: Sequence[str], available: bool) -> AvailabilityResult:
        wanted = list(dict.fromkeys(item_ids))
        flag = 1 if available else 0
        with self._lock:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                stored: dict[str, int] = {}
                for start in range(0, len(wanted), _MAX_ROWS_PER_INSERT):
                    chunk = wanted[start : start + _MAX_ROWS_PER_INSERT]
                    marks = ",".join("?" * len(chunk))
                    stored.update(
                        self._writer.execute(
                            f"SELECT item_id, available FROM items WHERE item_id IN ({marks})",
                            chunk,
                        ).fetchall()
                    )
                changing = [item for item in wanted if item in stored and stored[item] != flag]
                if changing:
                    self._writer.execute(
                        f"UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
                        f" WHERE key = '{_CATALOGUE_KEY}'"
                    )
                    now = _now_ms()
                    self._writer.executemany(
                        "UPDATE items SET available = ?, updated_ms = ?,"
                        f" revision = {_CATALOGUE_SQL} WHERE item_id = ?",
                        [(flag, now, item) for item in changing],
                    )
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise
        unknown = tuple(item for item in wanted if item not in stored)
        return AvailabilityResult(changed=len(changing), unknown_item_ids=unknown)

    def upsert_users(self, users: Iterable[tuple[str, Sequence[str]]]) -> int:
        now = _now_ms()
        values = [(user, TOKEN_SEPARATOR.join(tokens), now) for user, tokens in users]
        with self._lock:
            try:
                self._writer.executemany(
                    "INSERT INTO users (user_id, features, updated_ms) VALUES (?, ?, ?) "
                    "ON CONFLICT(user_id) DO UPDATE SET features=excluded.features, "
                    "updated_ms=excluded.updated_ms",
                    values,
                )
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise
        return len(values)

    def delete_user(self, user_id: str) -> tuple[bool, int]:
        """Erase a user's events, impressions and profile (item_days stays: anonymous
        counts); returns (existed, events deleted)."""
        with self._lock:
            try:
                # Write-locked before the user's seqs are read: another process cannot add
                # (or merge) the user's events between the read and the delete.
                self._writer.execute("BEGIN IMMEDIATE")
                seqs = seqs_of(self._writer, user_id, merged_upto(self._writer))
                self._writer.execute(
                    "INSERT OR IGNORE INTO erased_events (event_id) "
                    "SELECT event_id FROM events WHERE seq IN (SELECT value FROM json_each(?))",
                    (json.dumps(seqs),),
                )
                deleted = self._writer.execute(
                    "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))",
                    (json.dumps(seqs),),
                ).rowcount
                self._writer.execute("DELETE FROM user_events WHERE user_id = ?", (user_id,))
                profile = self._writer.execute(
                    "DELETE FROM users WHERE user_id = ?", (user_id,)
                ).rowcount
                # A scan (under the write lock): erasures are rare and it takes about 0.1 s
                # per million impressions (cached), while an index by user would cost every
                # impression a second random B-tree page written and 22 bytes (measured
                # with 10 items each: 9% more bytes, 30% fewer impressions stored per
                # second).
                mine = self._writer.execute(
                    "DELETE FROM impressions WHERE user_id = ? RETURNING recommendation_id",
                    (user_id,),
                ).fetchall()
                # What was shown of the user's responses, whoever it names (a caller's
                # report names no user by default): primary-key lookups, no second scan.
                responses = json.dumps(sorted({str(row[0]) for row in mine}))
                self._writer.execute(
                    "DELETE FROM impressions WHERE kind = ?"
                    " AND recommendation_id IN (SELECT value FROM json_each(?))",
                    (KIND_CODES[ImpressionKind.SHOWN], responses),
                )
                # Remembered by id, as erased events are: a report of what was shown,
                # arriving later and naming no user, must not store the list again.
                self._writer.execute(
                    "INSERT OR IGNORE INTO erased_recommendations (recommendation_id)"
                    " SELECT value FROM json_each(?)",
                    (responses,),
                )
                # Only a hash is kept: enough to tell the user's devices to purge. Each
                # erasure is numbered, so a device purges once per erasure (see
                # latest_erasure) and a user who comes back is not purged again.
                self._writer.execute(
                    "INSERT OR IGNORE INTO erased_users (user_hash) VALUES (?)",
                    (user_hash(user_id),),
                )
                erasure = self._writer.execute(
                    "INSERT INTO erasures (user_hash) VALUES (?)", (user_hash(user_id),)
                ).lastrowid
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise
            self._recent.erased(user_id, seqs, int(erasure or 0))
        # Impressions alone are data about the user: the user existed.
        return bool(deleted or profile or mine), int(deleted)

    def erased_among(self, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` were erased and have no events since (see was_erased)."""
        with self._read() as connection:
            hashes = {row[0] for row in connection.execute("SELECT user_hash FROM erased_users")}
        if not hashes:
            return set()
        marked = [u for u in user_ids if user_hash(u) in hashes]
        return {u for u in marked if self.was_erased(u)}

    def erasure_state(self, user_id: str) -> tuple[int, bool]:
        """(latest_erasure, was_erased) for the user, read in one snapshot: an erasure
        committing in between cannot split them."""
        with self._snapshot() as connection:
            latest, marked = connection.execute(
                "SELECT (SELECT COALESCE(MAX(erasure_id), 0) FROM erasures WHERE user_hash = ?1),"
                " EXISTS (SELECT 1 FROM erased_users WHERE user_hash = ?1)",
                (user_hash(user_id),),
            ).fetchone()
            erased = bool(marked) and not self._has_events(connection, user_id)
        return int(latest), erased

    def latest_erasure(self, user_id: str) -> int:
        """The id of the user's latest erasure (ids grow with every erasure; 0: never
        erased). Also after the user came back with new events: a device still holding
        data from before that erasure must purge it."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT MAX(erasure_id) FROM erasures WHERE user_hash = ?", (user_hash(user_id),)
            ).fetchone()
        return int(row[0]) if row[0] is not None else 0

    def was_erased(self, user_id: str) -> bool:
        """Whether the user was erased (and has not come back with new events since)."""
        return self.erasure_state(user_id)[1]

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (erased rows leave the WAL too)."""
        with self._lock:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- model registry (see EventStore) -------------------------------------------------------
    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise

    def save_model(self, version: str, files: ModelFiles) -> bool:
        with self._write_transaction() as writer:
            if writer.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone():
                return False
            writer.executemany(
                "INSERT INTO model_files (version, path, chunk, data) VALUES (?, ?, ?, ?)",
                [
                    (version, path, number, chunk)
                    for path, data in files
                    for number, chunk in enumerate(model_chunks(data))
                ],
            )
            writer.execute(
                "INSERT INTO models (version, saved, saved_ms) VALUES"
                " (?, (SELECT COALESCE(MAX(saved), 0) + 1 FROM models), ?)",
                (version, _now_ms()),
            )
        return True

    def has_model(self, version: str) -> bool:
        with self._read() as connection:
            row = connection.execute("SELECT 1 FROM models WHERE version = ?", (version,))
            return row.fetchone() is not None

    def model_files(self, version: str) -> ModelFiles:
        with self._snapshot() as connection:
            if not connection.execute(
                "SELECT 1 FROM models WHERE version = ?", (version,)
            ).fetchone():
                raise StorageError(f"{self.path}: model {version!r} is not in the store")
            rows = connection.execute(
                "SELECT path, data FROM model_files WHERE version = ? ORDER BY path, chunk",
                (version,),
            ).fetchall()
        return joined_chunks(rows)

    def current_model(self) -> ModelPointer | None:
        with self._read() as connection:
            row = connection.execute(
                "SELECT version, published FROM model_pointer WHERE id = 1"
            ).fetchone()
        return None if row is None else ModelPointer(version=row[0], published=int(row[1]))

    def publish_model(self, version: str, *, lease: tuple[str, str] | None = None) -> ModelPointer:
        with self._write_transaction() as writer:
            if not writer.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone():
                raise StorageError(f"{self.path}: model {version!r} is not in the store")
            if (
                lease is not None
                and not writer.execute(
                    "SELECT 1 FROM leases WHERE name = ? AND holder = ? AND expires_ms > ?",
                    (*lease, _now_ms()),
                ).fetchone()
            ):
                raise LeaseLostError(
                    f"{self.path}: lease {lease[0]!r} is not held by {lease[1]!r}:"
                    f" model {version!r} not published"
                )
            published = writer.execute(
                "INSERT INTO model_pointer (id, version, published) VALUES (1, ?, 1)"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
                " published = model_pointer.published + 1 RETURNING published",
                (version,),
            ).fetchone()[0]
        return ModelPointer(version=version, published=int(published))

    def prune_models(self, keep: int, protected: Collection[str] = ()) -> list[str]:
        with self._write_transaction() as writer:
            rows = writer.execute(
                "SELECT version FROM models WHERE version NOT IN"
                " (SELECT version FROM model_pointer) ORDER BY saved DESC"
            ).fetchall()
            # Read under the write lock: no pin commits between this read and the delete.
            spared = set(protected) | {
                str(row[0]) for row in writer.execute("SELECT version FROM model_pins")
            }
            gone = [str(row[0]) for row in rows[keep:] if str(row[0]) not in spared]
            for version in gone:
                writer.execute("DELETE FROM model_files WHERE version = ?", (version,))
                writer.execute("DELETE FROM models WHERE version = ?", (version,))
        return gone

    def pin_models(self, owner: str, versions: Collection[str]) -> set[str]:
        wanted = json.dumps(sorted(set(versions)))
        with self._write_transaction() as writer:
            missing = {
                str(row[0])
                for row in writer.execute(
                    "SELECT value FROM json_each(?)"
                    " WHERE value NOT IN (SELECT version FROM models)",
                    (wanted,),
                )
            }
            if missing:
                return missing
            writer.execute(
                "DELETE FROM model_pins WHERE owner = ?"
                " AND version NOT IN (SELECT value FROM json_each(?))",
                (owner, wanted),
            )
            writer.execute(
                "INSERT OR IGNORE INTO model_pins (owner, version)"
                " SELECT ?, value FROM json_each(?)",
                (owner, wanted),
            )
        return set()

    def pinned_models(self) -> set[str]:
        with self._read() as connection:
            return {
                str(row[0]) for row in connection.execute("SELECT DISTINCT version FROM model_pins")
            }

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        now = _now_ms()
        with self._write_transaction() as writer:
            row = writer.execute(
                "INSERT INTO leases (name, holder, expires_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_ms = excluded.expires_ms"
                " WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?"
                " RETURNING holder",
                (name, holder, now + int(ttl_seconds * 1000), now),
            ).fetchone()
        return row is not None

    def release_lease(self, name: str, holder: str) -> None:
        with self._write_transaction() as writer:
            writer.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease_holder(self, name: str) -> str | None:
        with self._read() as connection:
            row = connection.execute(
                "SELECT holder FROM leases WHERE name = ? AND expires_ms > ?", (name, _now_ms())
            ).fetchone()
        return None if row is None else str(row[0])

    # -- dashboard (see EventStore) -------------------------------------------------------------
    def record_replica_sample(self, sample: ReplicaSample) -> None:
        figures = sample_figures(sample)
        with self._write_transaction() as writer:
            # Before the insert: a sample older than 24 h stays until the next write.
            writer.execute(
                "DELETE FROM replica_samples WHERE time_ms < ?",
                (max(_now_ms() - SAMPLE_RETENTION_MS, INT64_MIN),),
            )
            writer.execute(
                "INSERT INTO replica_samples (replica, time_ms, figures) VALUES (?, ?, ?)"
                " ON CONFLICT (replica, time_ms) DO UPDATE SET figures = excluded.figures",
                (sample.replica, sample.time_ms, figures),
            )

    def replica_samples(self, since_ms: int) -> list[ReplicaSample]:
        with self._read() as connection:
            rows = connection.execute(
                "SELECT replica, time_ms, figures FROM replica_samples WHERE time_ms >= ?"
                " ORDER BY replica, time_ms",
                (min(max(since_ms, INT64_MIN), INT64_MAX),),
            ).fetchall()
        return [stored_sample(row) for row in rows]

    def record_audits(self, entries: Sequence[AuditEntry]) -> None:
        for entry in entries:
            check_audit(entry)
        if not entries:
            return
        with self._write_transaction() as writer:
            writer.executemany(
                "INSERT INTO audit (time_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                [(e.time_ms, e.actor, e.action, e.target, e.detail) for e in entries],
            )

    def audit_entries(self, target: str, limit: int = 50) -> list[AuditEntry]:
        limit = checked_limit(limit)
        if unstorable_text(target):  # never stored (check_audit); the driver would fail
            return []
        with self._read() as connection:
            rows = connection.execute(
                "SELECT time_ms, actor, action, target, detail FROM audit WHERE target = ?"
                " ORDER BY time_ms DESC, audit_id DESC LIMIT ?",
                (target, limit),
            ).fetchall()
        return [
            AuditEntry(int(t), str(actor), str(a), str(tg), str(d)) for t, actor, a, tg, d in rows
        ]

    def save_evaluation(self, name: str, files: Sequence[tuple[str, bytes]]) -> EvaluationInfo:
        stored = checked_evaluation(name, files)
        now = _now_ms()
        with self._write_transaction() as writer:
            writer.execute("DELETE FROM evaluation_files WHERE name = ?", (name,))
            writer.execute("DELETE FROM evaluations WHERE name = ?", (name,))
            writer.executemany(
                "INSERT INTO evaluation_files (name, file, chunk, data) VALUES (?, ?, ?, ?)",
                [
                    (name, file, number, chunk)
                    for file, data in stored
                    for number, chunk in enumerate(model_chunks(data))
                ],
            )
            writer.execute(
                "INSERT INTO evaluations (name, saved, saved_ms) VALUES"
                " (?, (SELECT COALESCE(MAX(saved), 0) + 1 FROM evaluations), ?)",
                (name, now),
            )
        return EvaluationInfo(name, now, tuple(file for file, _ in stored))

    def evaluations(self) -> list[EvaluationInfo]:
        with self._snapshot() as connection:
            rows = connection.execute(
                "SELECT name, saved_ms FROM evaluations ORDER BY saved DESC"
            ).fetchall()
            files: dict[str, list[str]] = {}
            for name, file in connection.execute(
                "SELECT name, file FROM evaluation_files WHERE chunk = 0 ORDER BY name, file"
            ):
                files.setdefault(str(name), []).append(str(file))
        return [
            EvaluationInfo(str(name), int(saved_ms), tuple(files.get(str(name), ())))
            for name, saved_ms in rows
        ]

    def evaluation_file(self, name: str, file: str) -> bytes:
        check_evaluation_key(name, file)
        with self._snapshot() as connection:
            known = connection.execute("SELECT 1 FROM evaluations WHERE name = ?", (name,))
            if known.fetchone() is None:
                raise UnknownIdError(f"name: unknown evaluation {name!r}")
            rows = connection.execute(
                "SELECT data FROM evaluation_files WHERE name = ? AND file = ? ORDER BY chunk",
                (name, file),
            ).fetchall()
        if not rows:
            raise UnknownIdError(f"file: evaluation {name!r} has no file {file!r}")
        return b"".join(bytes(row[0]) for row in rows)

    # -- reads --------------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read connection, lent from a pool for the block: opening one (connect and its
        pragmas) costs about half a millisecond, more than the reads of a request."""
        with self._spare_lock:
            connection = self._spare.pop() if self._spare else None
        if connection is None:
            connection = self._connect()
        try:
            yield connection
        finally:
            if connection.in_transaction:  # an exception inside a snapshot
                connection.rollback()
            with self._spare_lock:
                keep = not self._closed and len(self._spare) < _SPARE_READERS
                if keep:
                    self._spare.append(connection)
            if not keep:
                connection.close()

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read connection inside one transaction: every read sees the same commit."""
        with self._read() as connection:
            connection.execute("BEGIN")
            try:
                yield connection
            finally:
                connection.execute("COMMIT")

    def _user_rows(
        self, connection: sqlite3.Connection, user_id: str
    ) -> tuple[int, list[EventRow]]:
        """The store's last seq and the user's rows (seq first), oldest first, from the
        snapshot open on ``connection``: the merged index, then the tail."""
        last, upto, erasure = connection.execute(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events),"
            f" {UPTO_SQL},"
            " (SELECT COALESCE(MAX(erasure_id), 0) FROM erasures)"
        ).fetchone()
        tail = self._recent.rows(connection, user_id, upto, last, erasure)
        return int(last), indexed_rows(connection, user_id) + tail

    def _has_events(self, connection: sqlite3.Connection, user_id: str) -> bool:
        indexed = connection.execute(
            "SELECT 1 FROM user_events WHERE user_id = ? LIMIT 1", (user_id,)
        ).fetchone()
        return indexed is not None or bool(self._user_rows(connection, user_id)[1])

    def user_view(self, user_id: str, after_seq: int = 0) -> UserView:
        """The user's events after ``after_seq``, latest erasure and profile, and the
        store's last seq and catalogue revision, from one snapshot."""
        with self._snapshot() as connection:
            last, upto, erasure, user_erasure, profile, revision = connection.execute(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events),"
                f" {UPTO_SQL},"
                " (SELECT COALESCE(MAX(erasure_id), 0) FROM erasures),"
                " (SELECT COALESCE(MAX(erasure_id), 0) FROM erasures WHERE user_hash = ?),"
                " (SELECT features FROM users WHERE user_id = ?),"
                f" {_CATALOGUE_SQL}",
                (user_hash(user_id), user_id),
            ).fetchone()
            rows = indexed_rows(connection, user_id, after_seq) if after_seq < upto else []
            tail = self._recent.rows(connection, user_id, upto, last, erasure)
        rows += [row for row in tail if row[0] > after_seq]
        return UserView(
            last_seq=int(last),
            events=[(int(row[0]), _event(row[1:])) for row in rows],
            latest_erasure=int(user_erasure),
            profile=split_tokens(profile),
            catalogue_revision=int(revision or 0),
        )

    def catalogue_changes(self, after_revision: int = 0) -> tuple[int, list[CatalogueEntry]]:
        with self._snapshot() as connection:
            revision = connection.execute(f"SELECT {_CATALOGUE_SQL}").fetchone()[0]
            rows = connection.execute(
                "SELECT item_id, features, available, added_ms, tokens_revision, item_key"
                " FROM items WHERE revision > ? ORDER BY revision, item_id",
                (after_revision,),
            ).fetchall()
        return int(revision or 0), [
            CatalogueEntry(
                str(item), split_tokens(features), bool(available), int(added), int(tr), int(key)
            )
            for item, features, available, added, tr, key in rows
        ]

    def catalogue_revision(self) -> int:
        with self._read() as connection:
            return int(connection.execute(f"SELECT {_CATALOGUE_SQL}").fetchone()[0] or 0)

    def last_erasure(self) -> int:
        with self._read() as connection:
            row = connection.execute("SELECT COALESCE(MAX(erasure_id), 0) FROM erasures")
            return int(row.fetchone()[0])

    def events_for_user(self, user_id: str, after_seq: int = 0) -> list[tuple[int, StoredEvent]]:
        """The user's events stored after ``after_seq``, oldest first, with their seq."""
        with self._snapshot() as connection:
            _, rows = self._user_rows(connection, user_id)
        return [(int(row[0]), _event(row[1:])) for row in rows if row[0] > after_seq]

    def user_history(self, user_id: str) -> tuple[int, list[tuple[int, StoredEvent]]]:
        """The user's events with their seqs, and the store's last seq, from one snapshot:
        every event with a seq up to that one is either in the list or not the user's."""
        with self._snapshot() as connection:
            last, rows = self._user_rows(connection, user_id)
        return last, [(int(row[0]), _event(row[1:])) for row in rows]

    def last_seq(self) -> int:
        with self._read() as connection:
            row = connection.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def iter_events(
        self, after_seq: int = 0, batch: int = 10_000
    ) -> Iterator[tuple[int, StoredEvent]]:
        """Every stored event after ``after_seq`` in storage order, with its sequence number."""
        last = after_seq
        while True:
            with self._read() as connection:
                rows = connection.execute(
                    f"SELECT seq, {_EVENT_FIELDS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield int(row[0]), _event(row[1:])
            last = int(rows[-1][0])

    def events_between(
        self, from_ms: int, to_ms: int, batch: int = 10_000
    ) -> Iterator[StoredEvent]:
        """Every stored event with ``from_ms <= timestamp_ms < to_ms``, by (timestamp_ms,
        event_id), read ``batch`` at a time from one snapshot (a scan and a sort: events
        have no index by time, which every append would pay for)."""
        from_ms, to_ms = clamped_range(from_ms, to_ms)
        with self._streaming() as connection:
            cursor = connection.execute(
                f"SELECT {_EVENT_FIELDS} FROM events WHERE timestamp_ms >= ? AND timestamp_ms < ?"
                " ORDER BY timestamp_ms, event_id",
                (from_ms, to_ms),
            )
            while rows := cursor.fetchmany(batch):
                yield from map(_event, rows)

    def impressions_between(
        self, from_ms: int, to_ms: int, batch: int = 10_000
    ) -> Iterator[Impression]:
        """Every stored impression with ``from_ms <= time_ms < to_ms``, by (time_ms,
        recommendation_id, kind), read ``batch`` at a time from one snapshot."""
        from_ms, to_ms = clamped_range(from_ms, to_ms)
        with self._streaming() as connection:
            contexts = impression_contexts(
                connection.execute(f"SELECT {CONTEXT_COLUMNS} FROM impression_contexts")
            )
            cursor = connection.execute(
                "SELECT recommendation_id, kind, user_id, time_ms, context_id, items"
                " FROM impressions WHERE time_ms >= ? AND time_ms < ?"
                " ORDER BY time_ms, recommendation_id, kind",
                (from_ms, to_ms),
            )
            while rows := cursor.fetchmany(batch):
                for row in rows:
                    yield stored_impression(row, contexts)

    def impressions_of(self, recommendation_ids: Collection[str]) -> list[Impression]:
        if not recommendation_ids:
            return []
        with self._snapshot() as connection:
            rows = connection.execute(
                "SELECT recommendation_id, kind, user_id, time_ms, context_id, items"
                " FROM impressions WHERE recommendation_id IN (SELECT value FROM json_each(?))"
                " ORDER BY recommendation_id, kind",
                (json.dumps(sorted(set(recommendation_ids))),),
            ).fetchall()
            contexts = impression_contexts(
                connection.execute(
                    f"SELECT {CONTEXT_COLUMNS} FROM impression_contexts"
                    " WHERE context_id IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted({int(row[4]) for row in rows})),),
                )
            )
        return [stored_impression(row, contexts) for row in rows]

    def item_event_counts(self, after_seq: int = 0) -> tuple[int, list[tuple[str, EventType, int]]]:
        """How many events of each type every item received after ``after_seq``, and the
        store's last seq they run to (one snapshot: adding the counts after that seq later
        counts every event once)."""
        with self._snapshot() as connection:
            last = int(connection.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
            rows = connection.execute(
                "SELECT item_id, event_type, COUNT(*) FROM events WHERE seq > ? AND seq <= ?"
                " GROUP BY item_id, event_type",
                (after_seq, last),
            ).fetchall()
        return last, [(str(item), EventType(int(kind)), int(count)) for item, kind, count in rows]

    def item_feedback(self, item_id: str, since_ms: int) -> tuple[int, int]:
        """(shown, clicked) of the item on the days from ``since_ms``'s on (item_days)."""
        if unstorable_text(item_id):  # never stored; the driver would fail
            return 0, 0
        with self._read() as connection:
            shown, clicked = connection.execute(
                _ITEM_FEEDBACK, {"since": first_day(since_ms), "item": item_id}
            ).fetchone()
        return int(shown), int(clicked)

    def item_features(self) -> dict[str, tuple[str, ...]]:
        return self._features("items", "item_id")

    def user_features(self) -> dict[str, tuple[str, ...]]:
        return self._features("users", "user_id")

    def _features(self, table: str, key: str) -> dict[str, tuple[str, ...]]:
        return dict(self._iter_features(table, key))

    def iter_item_features(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Every catalogue item and its tokens, streamed (1M items never sit in one dict)."""
        return self._iter_features("items", "item_id")

    def _iter_features(self, table: str, key: str) -> Iterator[tuple[str, tuple[str, ...]]]:
        # A connection of its own: it stays open while the caller iterates.
        connection = self._connect()
        try:
            cursor = connection.execute(f"SELECT {key}, features FROM {table} ORDER BY {key}")
            while rows := cursor.fetchmany(10_000):
                for entity, features in rows:
                    yield entity, split_tokens(features)
        finally:
            connection.close()

    @contextmanager
    def _streaming(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own (not the pool's) in one read transaction, open while
        the caller iterates: until it ends, checkpoints cannot move past its snapshot."""
        connection = self._connect()
        try:
            connection.execute("BEGIN")
            yield connection
        finally:
            connection.close()  # ends the read transaction

    def counts(self) -> StoreCounts:
        with self._read() as connection:
            # Users from the merged index plus the tail: no sort of the whole events table.
            events, users_with_events = connection.execute(
                "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM ("
                " SELECT user_id FROM user_events UNION SELECT user_id FROM events"
                f" WHERE seq > {UPTO_SQL}))"
            ).fetchone()
            items = connection.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            users = connection.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        return StoreCounts(
            events=int(events),
            users_with_events=int(users_with_events),
            items=int(items),
            users=int(users),
        )

    def integrity_check(self) -> str:
        with self._read() as connection:
            return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


@functools.cache
def _count_shown_statement(rows: int) -> str:
    return _COUNT_SHOWN_HEAD + ", ".join(["(?, ?, ?)"] * rows) + _COUNT_SHOWN_TAIL


@functools.cache
def _insert_statement(rows: int) -> str:
    row = "(" + ", ".join(["?"] * _COLUMNS) + ")"
    return _INSERT_HEAD + ", ".join([row] * rows) + _INSERT_TAIL


def _event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        event_id=str(row[0]),
        user_id=str(row[1]),
        item_id=str(row[2]),
        event_type=EventType(int(row[3])),
        timestamp_ms=int(row[4]),
        session_id=str(row[5]),
        query=str(row[6]),
        recommendation_id=str(row[7]),
        position=int(row[8]),
    )
