"""The event store on PostgreSQL (``shelfrank.server.storage.EventStore``), for several
server processes, on several machines, sharing one store.

Same contract as the embedded :class:`~shelfrank.server.store.SQLiteStore`: ``event_id``
is unique (the same id again is a duplicate and changes nothing), ids of erased events
stay duplicates forever (``erased_events``), erased users are remembered by hash only
(``erased_users``) and every erasure is numbered (``erasures``). Durable at commit with
the server's default ``synchronous_commit=on``.

The commit-ordered cursor
-------------------------
Every event gets a ``seq``; a reader that saw the store's last seq ``s`` must have seen
every event with a seq up to ``s``, now and later (watermarks and fold-in rely on it,
see storage.py). A PostgreSQL sequence does not give that: ``nextval`` hands out numbers
when rows are inserted, not when they commit, so a transaction holding seq 5 can commit
after another's seq 6 was read as "the last". Here seqs come from one counter row,
``seq_counter.last_seq``, and every transaction that writes events takes it first::

    BEGIN ISOLATION LEVEL READ COMMITTED
    SELECT last_seq FROM seq_counter WHERE id = 1 FOR UPDATE   -- base; writers queue here
    [with erasure_seen: the latest erasure of each of the batch's users]
    WITH batch AS (unnest(<one array per column>) WITH ORDINALITY),
         fresh AS (batch rows whose id is neither stored nor erased, numbered k = 1..n),
         INSERT INTO events SELECT base + k, ... FROM fresh,
         UPDATE seq_counter SET last_seq = base + n
    SELECT ordinal FROM fresh                                   -- which were new
    COMMIT                                                      -- releases the row lock

Writers hold the row lock until they commit, so they run one after another and every
writer numbers its events above the last committed one: seqs follow commit order, with
no gaps but those erasures leave (a rolled-back writer also rolls back its counter). The
store's last seq is the counter; a reader reads it in the same snapshot as the events
(REPEATABLE READ where it reads more than one statement), and sees either a writer's
events and its counter or neither. Erasures (``delete_user``) take the same lock, so
the ``erasure_seen`` refusal, the erased-ids check and the insert are atomic with respect
to them, and erasures are numbered in commit order too. Impressions have no seq and stay
clear of the counter: their writers share an advisory lock that an erasure takes
exclusively (``_ERASURE_LOCK``), so an erasure check and the insert after it are atomic
with respect to erasures too.

Per-item daily counters (``item_days``, see store_common.py) are upserted by both writers in
their transactions, each in (day, item_id) order, so writers that touch the same rows wait
for each other but never deadlock. Impression writers run concurrently: two writers storing
a SERVED and a SHOWN record of one recommendation id at the same moment each miss the
other's, and both may count (the counters are approximate; the report is exact).

The lock is a statement of its own on purpose: under READ COMMITTED each statement reads
a fresh snapshot, so the statements after it see everything the previous lock holder
committed (a lookup inside the locking statement would use the snapshot from before the
wait). Within-batch copies of an id are dropped in Python first (the first copy is
kept). Writers are serialised, so the lock is held briefly: a batch of any size is two
statements between BEGIN and COMMIT (three with ``erasure_seen``), its columns sent as
binary arrays; and batches arriving in this process while a commit runs are stored
together in the next transaction (group commit, as SQLiteStore does).

Concurrency: a psycopg_pool connection pool shared by threads; several processes (or
machines) may open the same database (the counter lock orders their writers). The schema
is created on open if missing, under an advisory lock (two processes opening a new
database at once), and carries its version in ``meta``; a newer one is refused.

Erased rows leave the tables at once but, as with any PostgreSQL ``DELETE``, their bytes
stay in the heap until (auto)vacuum reuses the space, and in WAL archives and backups.
"""

from __future__ import annotations

import re
import select
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from shelfrank.core.errors import InvalidInputError, StorageError, UnknownIdError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server import pg_arrays
from shelfrank.server.pg_arrays import BigintArray, IntegerArray, SmallintArray, TextArray
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
    PendingBatch,
    StoredRecords,
    check_audit,
    check_evaluation_key,
    checked_evaluation,
    checked_limit,
    clamped_range,
    context_of,
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

# 2: catalogue revisions (catalogue_counter, items.revision); the model registry and leases.
# 3: catalogue items carry their availability and when they were first stored.
# 4: events carry the response they answer (recommendation_id, position); impressions.
# 5: model versions pinned in the store (model_pins), never pruned.
# 6: the dashboard's replica samples, audit log and saved evaluations.
# 7: per-item daily counters of impressions and clicks (item_days), kept at write time.
SCHEMA_VERSION = 9
# Text keys use the "C" collation: bytewise order, as SQLite's (feature listings come out
# in the same order on both stores), and cheaper comparisons in every index.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seq_counter (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO seq_counter (id, last_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT PRIMARY KEY,
    event_id TEXT COLLATE "C" NOT NULL UNIQUE,
    user_id TEXT COLLATE "C" NOT NULL,
    item_id TEXT COLLATE "C" NOT NULL,
    event_type SMALLINT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    session_id TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, seq);
CREATE TABLE IF NOT EXISTS erased_events (event_id TEXT COLLATE "C" PRIMARY KEY);
CREATE TABLE IF NOT EXISTS erased_recommendations (recommendation_id TEXT COLLATE "C" PRIMARY KEY);
CREATE TABLE IF NOT EXISTS erased_users (user_hash TEXT COLLATE "C" PRIMARY KEY);
CREATE TABLE IF NOT EXISTS erasures (
    erasure_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_hash TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS erasures_by_user ON erasures (user_hash, erasure_id);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT COLLATE "C" PRIMARY KEY, features TEXT NOT NULL, updated_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT COLLATE "C" PRIMARY KEY, features TEXT NOT NULL, updated_ms BIGINT NOT NULL
);
-- Schema 2. Every upsert of items takes the next revision, under this row's lock until it
-- commits: revisions follow commit order. Items from schema 1 become revision 1.
ALTER TABLE items ADD COLUMN IF NOT EXISTS revision BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS catalogue_counter (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL CHECK (revision >= 0)
);
INSERT INTO catalogue_counter (id, revision)
    SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM items) THEN 1 ELSE 0 END
    ON CONFLICT (id) DO NOTHING;
UPDATE items SET revision = 1 WHERE revision = 0;
CREATE INDEX IF NOT EXISTS items_by_revision ON items (revision, item_id);
-- Schema 3. Items of schema 2 were all available; they were first stored when last updated.
ALTER TABLE items ADD COLUMN IF NOT EXISTS available BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE items ADD COLUMN IF NOT EXISTS added_ms BIGINT;
UPDATE items SET added_ms = updated_ms WHERE added_ms IS NULL;
ALTER TABLE items ADD COLUMN IF NOT EXISTS tokens_revision BIGINT;
UPDATE items SET tokens_revision = revision WHERE tokens_revision IS NULL;
CREATE TABLE IF NOT EXISTS models (
    version TEXT COLLATE "C" PRIMARY KEY,
    saved BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    saved_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_files (
    version TEXT COLLATE "C" NOT NULL, path TEXT COLLATE "C" NOT NULL, chunk INTEGER NOT NULL,
    data BYTEA NOT NULL, PRIMARY KEY (version, path, chunk)
);
CREATE TABLE IF NOT EXISTS model_pointer (
    id SMALLINT PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL, published BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT COLLATE "C" PRIMARY KEY, holder TEXT NOT NULL, expires_ms BIGINT NOT NULL
);
-- Schema 4 (and _ADD_ATTRIBUTION_COLUMNS below).
CREATE TABLE IF NOT EXISTS impression_contexts (
    context_id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    surface TEXT NOT NULL, experiment TEXT NOT NULL, variant TEXT NOT NULL,
    model_version TEXT NOT NULL,
    UNIQUE (surface, experiment, variant, model_version)
);
-- Fixed-width columns first: no alignment padding between them. No index by user: see
-- delete_user.
CREATE TABLE IF NOT EXISTS impressions (
    time_ms BIGINT NOT NULL,
    context_id INTEGER NOT NULL,  -- impression_contexts
    kind SMALLINT NOT NULL,  -- store_common.KIND_CODES
    recommendation_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    items TEXT NOT NULL,  -- item ids in shown order, joined by TOKEN_SEPARATOR
    PRIMARY KEY (recommendation_id, kind)
);
CREATE INDEX IF NOT EXISTS impressions_by_time ON impressions (time_ms);
-- Schema 5. A pin names a stored model: deleting a pinned version fails (a process that
-- does not read pins cannot prune it either).
CREATE TABLE IF NOT EXISTS model_pins (
    owner TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL REFERENCES models (version),
    PRIMARY KEY (owner, version)
);
CREATE INDEX IF NOT EXISTS model_pins_by_version ON model_pins (version);
-- Schema 6: the dashboard's tables. A replica's load samples (figures: JSON, see
-- store_common.sample_figures), kept 24 h.
CREATE TABLE IF NOT EXISTS replica_samples (
    time_ms BIGINT NOT NULL,
    replica TEXT COLLATE "C" NOT NULL,
    figures TEXT NOT NULL,
    PRIMARY KEY (replica, time_ms)
);
CREATE INDEX IF NOT EXISTS replica_samples_by_time ON replica_samples (time_ms);
-- Changes made by hand, read per target newest first; audit_id orders entries of one ms.
CREATE TABLE IF NOT EXISTS audit (
    audit_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT COLLATE "C" NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit (target, time_ms, audit_id);
-- Saved offline evaluations, their files in chunks as model_files; saved orders them.
CREATE TABLE IF NOT EXISTS evaluations (
    name TEXT COLLATE "C" PRIMARY KEY,
    saved BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    saved_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluation_files (
    name TEXT COLLATE "C" NOT NULL, file TEXT COLLATE "C" NOT NULL, chunk INTEGER NOT NULL,
    data BYTEA NOT NULL, PRIMARY KEY (name, file, chunk)
);
-- Schema 7 (then counted: _COUNT_STORED). How often each item was shown and clicked per UTC
-- day (day: time_ms // DAY_MS), kept by record_impressions and append_events in their
-- transactions (store_common.shown_deltas, _INSERT); anonymous aggregates that an erasure
-- leaves. Writers upsert their rows in key order: no deadlock between them. Keyed by day
-- first, as SQLiteStore's (store.py): a day's writes stay in its part of the index; a read
-- by item seeks the days present (store_common.item_feedback_sql). Pages half full: an
-- update finds room on its row's page (a HOT update, no new index entry; measured: 2,000
-- counts upserted in 11 ms instead of 18).
CREATE TABLE IF NOT EXISTS item_days (
    day BIGINT NOT NULL,
    shown BIGINT NOT NULL DEFAULT 0,
    clicked BIGINT NOT NULL DEFAULT 0,
    item_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (day, item_id)
) WITH (fillfactor = 50);
"""
# Schema 8: catalogue items carry an integer key, given once and never reused (an
# identity: existing items are numbered as the column is added). Run once: ALTER TABLE
# locks the items table exclusively.
_KEY_ITEMS = """
ALTER TABLE items ADD COLUMN IF NOT EXISTS item_key BIGINT GENERATED BY DEFAULT AS IDENTITY;
CREATE UNIQUE INDEX IF NOT EXISTS items_by_key ON items (item_key);
"""
# Schema 4: events of schema 3 answer no known response (recommendation id "", position
# 0). A constant default: no row is rewritten. Run only on stores from before schema 4:
# ALTER TABLE locks the events table exclusively even when the column exists.
_ADD_ATTRIBUTION_COLUMNS = """
ALTER TABLE events ADD COLUMN IF NOT EXISTS recommendation_id TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN IF NOT EXISTS position INTEGER NOT NULL DEFAULT 0;
"""
# The clicks among events (``source``: rows with the events table's columns) counted in
# item_days: a VIEW answering a stored impression (served or shown) that holds its item and
# names its user or none. A primary-key lookup per such event; one upsert per (item, day),
# in key order as every writer of item_days.
_SEPARATOR_SQL = f"chr({ord(TOKEN_SEPARATOR)})"


def _count_clicks(source: str) -> str:
    return f"""
    INSERT INTO item_days (item_id, day, shown, clicked)
    SELECT e.item_id, {day_sql("e.timestamp_ms")}, 0, COUNT(*) FROM {source} e
    WHERE e.event_type = {int(EventType.VIEW)} AND e.recommendation_id <> ''
      AND e.item_id <> '' AND EXISTS (
        SELECT 1 FROM impressions i WHERE i.recommendation_id = e.recommendation_id
        AND i.user_id IN (e.user_id, '')
        AND e.item_id = ANY(string_to_array(i.items, {_SEPARATOR_SQL})))
    GROUP BY 2, e.item_id ORDER BY 2, e.item_id COLLATE "C"
    ON CONFLICT (day, item_id) DO UPDATE SET clicked = item_days.clicked + excluded.clicked
    """


# Schema 6 and before kept no per-item counters: counted from the stored impressions (by
# store_common.shown_deltas's rule: each recommendation id's SERVED record, else its
# SHOWN one) and events, when the schema is created (a scan of both, once).
_COUNT_STORED = f"""
INSERT INTO item_days (item_id, day, shown, clicked)
SELECT item_id, day, COUNT(*), 0 FROM (
    SELECT DISTINCT i.recommendation_id, t.item_id, {day_sql("i.time_ms")} AS day
    FROM impressions i, unnest(string_to_array(i.items, {_SEPARATOR_SQL})) AS t(item_id)
    WHERE t.item_id <> '' AND (i.kind = {KIND_CODES[ImpressionKind.SERVED]} OR NOT EXISTS (
        SELECT 1 FROM impressions s WHERE s.recommendation_id = i.recommendation_id
        AND s.kind = {KIND_CODES[ImpressionKind.SERVED]}))
) counted GROUP BY item_id, day
ON CONFLICT (day, item_id) DO UPDATE SET shown = item_days.shown + excluded.shown;
{_count_clicks("events")};
"""
# The new records' counts (store_common.shown_deltas) added to item_days. A negative one (a
# SERVED record taking back what its id's SHOWN one counted) only where the row exists, and
# never below 0.
_COUNT_SHOWN = """
INSERT INTO item_days (item_id, day, shown, clicked)
SELECT d.item_id, d.day, d.shown, 0
FROM unnest(%(item_id)b::text[], %(day)b::bigint[], %(shown)b::bigint[]) AS d(item_id, day, shown)
WHERE d.shown > 0
   OR EXISTS (SELECT 1 FROM item_days x WHERE x.day = d.day AND x.item_id = d.item_id)
ORDER BY d.day, d.item_id COLLATE "C"
ON CONFLICT (day, item_id) DO UPDATE SET shown = GREATEST(0, item_days.shown + excluded.shown)
"""
_ITEM_FEEDBACK = item_feedback_sql("%(since)s::bigint", "%(item)s")
# Serialises schema creation between processes opening the same new database.
_SCHEMA_LOCK = 0x5EF_4A4B_0001
# With a version's hash: serialises saves of the same model version.
_MODEL_LOCK = 0x5EF_4A4B
# Erasures and impressions: record_impressions holds it shared for its transaction (writers
# of impressions do not wait for each other), delete_user exclusively (taken first), so an
# impression is stored either before an erasure (and deleted by it) or after it (and its
# erasure check sees it). Events need none: appends and erasures both take the seq
# counter's row lock, which impression writers stay clear of (they would queue behind
# every append).
_ERASURE_LOCK = 0x5EF_4A4B_0002
# Serialises pin_models and prune_models: a pin committed while a prune runs would not be
# seen by its read (READ COMMITTED), and its version would be deleted.
_PINS_LOCK = 0x5EF_4A4B_0003
# Serialises writers of replica samples: each deletes the old samples of every replica,
# and two deletes locking the same rows in different orders could deadlock.
_SAMPLES_LOCK = 0x5EF_4A4B_0004
# With a name's hash: serialises saves of the same evaluation (the second replaces the
# first instead of failing on its primary key).
_EVALUATION_LOCK = 0x5EF_4A4C
_LOCK_COUNTER = "SELECT last_seq FROM seq_counter WHERE id = 1 FOR UPDATE"
# The batch's new events inserted, numbered base+1.. in batch order, and the counter
# moved past them, in one statement (one snapshot, taken after the counter lock: every
# event committed before is seen). Within-batch copies are gone before (in Python); a
# stored id or an erased event's id is not new. Answers the ordinals (1-based batch
# positions) of the new events, in seq order. Arrays are sent in binary (``%b``): text
# arrays cost psycopg about ten times as much to write.
_INSERT = f"""
WITH batch AS (
    SELECT * FROM unnest(%(event_id)b::text[], %(user_id)b::text[], %(item_id)b::text[],
                         %(event_type)b::smallint[], %(timestamp_ms)b::bigint[],
                         %(session_id)b::text[], %(query)b::text[],
                         %(recommendation_id)b::text[], %(position)b::integer[]) WITH ORDINALITY
        AS t(event_id, user_id, item_id, event_type, timestamp_ms, session_id, query,
             recommendation_id, position, ordinal)
), fresh AS (
    SELECT b.*, row_number() OVER (ORDER BY b.ordinal) AS k FROM batch b
    WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = b.event_id)
      AND NOT EXISTS (SELECT 1 FROM erased_events x WHERE x.event_id = b.event_id)
), stored AS (
    INSERT INTO events (seq, event_id, user_id, item_id, event_type, timestamp_ms,
                        session_id, query, recommendation_id, position)
    SELECT %(base)s::bigint + k, event_id, user_id, item_id, event_type, timestamp_ms,
           session_id, query, recommendation_id, position FROM fresh
), counted AS (
    UPDATE seq_counter SET last_seq = %(base)s::bigint + (SELECT COUNT(*) FROM fresh)
    WHERE id = 1
), clicked AS ({_count_clicks("fresh")})
SELECT ordinal FROM fresh ORDER BY k
"""
_EVENT_FIELDS = ", ".join(StoredEvent._fields)  # the events table's columns, as a StoredEvent
_EVENT_COLUMNS = f"seq, {_EVENT_FIELDS}"
_LAST_SEQ = "SELECT last_seq FROM seq_counter WHERE id = 1"
_CATALOGUE_REVISION = "SELECT revision FROM catalogue_counter WHERE id = 1"
# One statement, so one snapshot: the counter and the user's rows agree.
_USER_VIEW = f"""
SELECT c.last_seq,
       (SELECT COALESCE(MAX(erasure_id), 0) FROM erasures WHERE user_hash = %(hash)s),
       (SELECT features FROM users WHERE user_id = %(user)s),
       ({_CATALOGUE_REVISION}),
       e.seq, e.event_id, e.user_id, e.item_id, e.event_type, e.timestamp_ms, e.session_id,
       e.query, e.recommendation_id, e.position
FROM seq_counter c LEFT JOIN LATERAL (
    SELECT * FROM events WHERE user_id = %(user)s AND seq > %(after)s AND seq <= c.last_seq
) e ON true
WHERE c.id = 1 ORDER BY e.seq
"""
# A batch's new contexts, in a fixed order: two writers inserting the same ones wait for
# each other in the same order (no deadlock).
_INSERT_CONTEXTS = """
INSERT INTO impression_contexts (surface, experiment, variant, model_version)
SELECT * FROM unnest(%(surface)s::text[], %(experiment)s::text[], %(variant)s::text[],
                     %(model_version)s::text[])
ON CONFLICT DO NOTHING
"""
# The batch's impressions (one per key) not stored yet, inserted in the given order (sorted
# by key: two writers of the same keys lock them in the same order); answers the keys
# stored.
_INSERT_IMPRESSIONS = """
INSERT INTO impressions (time_ms, context_id, kind, recommendation_id, user_id, items)
SELECT b.time_ms, c.context_id, b.kind, b.recommendation_id, b.user_id, b.items
FROM unnest(%(recommendation_id)b::text[], %(kind)b::smallint[], %(user_id)b::text[],
            %(time_ms)b::bigint[], %(surface)b::text[], %(experiment)b::text[],
            %(variant)b::text[], %(model_version)b::text[], %(items)b::text[])
     WITH ORDINALITY AS b(recommendation_id, kind, user_id, time_ms, surface, experiment,
                          variant, model_version, items, ordinal)
JOIN impression_contexts c USING (surface, experiment, variant, model_version)
ORDER BY b.ordinal
ON CONFLICT (recommendation_id, kind) DO NOTHING
RETURNING recommendation_id, kind
"""
_CONNECT_TIMEOUT_S = 10
_CHECKOUT_TIMEOUT_S = 3.0  # longest wait for a pooled connection
# Leases expire by the database's clock: the processes' clocks may disagree.
_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_FEATURE_PAGE = 10_000


def _describe(store: Any, method: str, exc: BaseException) -> str:
    where = getattr(store, "where", "PostgreSQL")
    # libpq's messages span lines (a reason, then a hint): one line, as errors are printed.
    reason = " ".join(str(exc).split())
    return _redacted(f"event store ({where}): {method}: {reason}", getattr(store, "_secret", None))


def _redacted(text: str, secret: str | None) -> str:
    """``text`` without the password (from the URL's parameters or its user:password@)."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return text.replace(secret, "***") if secret else text


def _where(url: str) -> tuple[str, str | None]:
    """``host:port/dbname`` of the server ``url`` names (for messages), and its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "PostgreSQL (unparsable URL)", None
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or 5432)
    dbname = str(params.get("dbname") or params.get("user") or "")
    password = params.get("password")
    return f"PostgreSQL at {host}:{port}/{dbname}", str(password) if password else None


def _configure(connection: psycopg.Connection[TupleRow]) -> None:
    """Transactions begin READ COMMITTED whatever the server's default (the writers'
    design needs a fresh snapshot per statement); snapshot reads ask for more."""
    connection.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    pg_arrays.register(connection.adapters)


def _check_idle(connection: psycopg.Connection[TupleRow]) -> None:
    """Raise if a pooled connection is unusable, without a round trip in the common case:
    an idle connection has nothing to read unless the server closed it or said it is
    closing it, so only then (or when psycopg knows it broken) does the pool's full check
    (an empty query) run. An empty query on every checkout was half the database round
    trips of a Recommend (benchmarks/RESULTS.md, Scale-out)."""
    if connection.closed or connection.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([connection.pgconn.socket], [], [], 0)
    if readable:
        ConnectionPool.check_connection(connection)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        event_id=row[0],
        user_id=row[1],
        item_id=row[2],
        event_type=EventType(row[3]),
        timestamp_ms=int(row[4]),
        session_id=row[5],
        query=row[6],
        recommendation_id=row[7],
        position=int(row[8]),
    )


def _seq_events(rows: Iterable[Sequence[Any]]) -> list[tuple[int, StoredEvent]]:
    return [(int(row[0]), _event(row[1:])) for row in rows]


def _latest_erasures(connection: psycopg.Connection[TupleRow], users: set[str]) -> dict[str, int]:
    """The latest erasure id of each of ``users`` that was ever erased."""
    if not users:
        return {}
    by_hash = {user_hash(user): user for user in users}
    rows = connection.execute(
        "SELECT user_hash, MAX(erasure_id) FROM erasures"
        " WHERE user_hash = ANY(%s::text[]) GROUP BY user_hash",
        (list(by_hash),),
    ).fetchall()
    return {by_hash[hashed]: int(erasure) for hashed, erasure in rows}


def _stored_records(
    connection: psycopg.Connection[TupleRow], recommendation_ids: set[str]
) -> StoredRecords:
    """The stored records of ``recommendation_ids`` by (id, kind): (user, time_ms, items)
    (primary-key lookups)."""
    rows = connection.execute(
        "SELECT recommendation_id, kind, user_id, time_ms, items FROM impressions"
        " WHERE recommendation_id = ANY(%b::text[])",
        (TextArray.of(list(recommendation_ids)),),
    ).fetchall()
    return {
        (str(rid), IMPRESSION_KINDS[int(kind)]): (str(user), int(time_ms), split_tokens(items))
        for rid, kind, user, time_ms, items in rows
    }


def _lock_counter(connection: psycopg.Connection[TupleRow]) -> int:
    """The seq counter, locked until the transaction ends (see the module docstring)."""
    return int(_one(connection.execute(_LOCK_COUNTER), "seq counter")[0])


def _one(cursor: psycopg.Cursor[TupleRow], what: str) -> TupleRow:
    row = cursor.fetchone()
    if row is None:
        raise StorageError(f"event store: {what}: no row (is the schema intact?)")
    return row


@errors_mapped(psycopg.Error, _describe)
class PostgresStore:
    """The store in the PostgreSQL database ``url`` names (``postgresql://user@host/db``;
    libpq's parameters, e.g. ``?options=-csearch_path%3Dshop``, pass through).
    ``pool_size``: most connections this process opens."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.where, self._secret = _where(url)
        if pool_size < 1:
            raise InvalidInputError(f"pool_size: must be at least 1, got {pool_size}")
        params = conninfo_to_dict(url)
        connect: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            connect["connect_timeout"] = _CONNECT_TIMEOUT_S
        self._lock = threading.Lock()  # one group commit at a time in this process
        self._group_commit = GroupCommit(self._lock)
        # Tests only: called inside the append transaction, after the insert and before
        # the commit (the counter lock is held).
        self._before_commit: Callable[[], None] | None = None
        # A connection of its own first: an unreachable server fails at once, with
        # libpq's reason, instead of after the pool's retries.
        with psycopg.connect(url, **connect) as connection:
            _configure(connection)
            self._create_schema(connection)
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            url,
            kwargs=connect,
            min_size=1,
            max_size=pool_size,
            open=False,
            name=self.where,
            configure=_configure,
            # A connection the server dropped (a restart, a failover) is replaced as it
            # leaves the pool instead of failing a call (see _check_idle).
            check=_check_idle,
            # While the database is away a call fails after this instead of waiting out
            # the client's deadline; the pool reconnects by itself when it is back.
            timeout=_CHECKOUT_TIMEOUT_S,
        )
        try:
            self._pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
        except BaseException:
            self._pool.close()
            raise

    def _create_schema(self, connection: psycopg.Connection[TupleRow]) -> None:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            connection.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise StorageError(
                    f"event store ({self.where}): store schema {row[0]} is newer than this "
                    f"shelfrank ({SCHEMA_VERSION})"
                )
            connection.execute(_SCHEMA)
            if row is None or int(row[0]) < 4:
                connection.execute(_ADD_ATTRIBUTION_COLUMNS)
            if row is None or int(row[0]) < 8:
                connection.execute(_KEY_ITEMS)
            if row is not None and int(row[0]) < 7:
                connection.execute(_COUNT_STORED)
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        self._pool.close()

    # -- transactions -------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[tuple[psycopg.Connection[TupleRow], int]]:
        """A READ COMMITTED transaction holding the seq counter's row lock until it ends,
        and the counter's value. The lock is a statement of its own: the statements after
        it see everything earlier holders committed."""
        with self._pool.connection() as connection, connection.transaction():
            # BEGIN ISOLATION LEVEL READ COMMITTED (see _configure)
            yield connection, _lock_counter(connection)

    @contextmanager
    def _snapshot(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A read-only transaction in which every statement sees the same commit."""
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield connection

    # -- writes -------------------------------------------------------------------------------
    def append_events(
        self, events: Sequence[StoredEvent], *, erasure_seen: int | None = None
    ) -> AppendResult:
        """Store new events durably; report duplicates by position.

        An id seen earlier in the batch, already stored, or of an erased user's event is a
        duplicate. With ``erasure_seen``, events of a user erased after it are refused, in
        the transaction of the insert (erasures take the same lock).

        Group commit: batches that arrive while a commit is in progress are written
        together in the next transaction, in arrival order; if it fails, every batch in it
        fails and none is stored."""
        if not events:
            return AppendResult(accepted=(), duplicates=())
        return self._group_commit.append(events, erasure_seen, self._append_group)

    def _append_group(self, group: Sequence[PendingBatch]) -> list[AppendResult]:
        """One transaction for every batch of ``group`` (see the module docstring)."""
        with self._writing() as (connection, base):
            refused = self._refused(connection, group)
            # The first copy of each id in the group, by (batch, position).
            candidates: dict[str, tuple[int, int, StoredEvent]] = {}
            for number, (pending, gone) in enumerate(zip(group, refused, strict=True)):
                for position, event in enumerate(pending.events):
                    if position not in gone and event.event_id not in candidates:
                        candidates[event.event_id] = (number, position, event)
            fresh = list(candidates.values())
            if fresh:
                stored = self._insert(connection, base, [event for _, _, event in fresh])
                fresh = [fresh[ordinal - 1] for ordinal in stored]
            if self._before_commit is not None:
                self._before_commit()
        seq_of = {(number, position): base + 1 + k for k, (number, position, _) in enumerate(fresh)}
        results: list[AppendResult] = []
        for number, (pending, gone) in enumerate(zip(group, refused, strict=True)):
            accepted: list[int] = []
            duplicates: list[int] = []
            seqs: list[int] = []
            for position in range(len(pending.events)):
                if position in gone:
                    continue
                seq = seq_of.get((number, position))
                if seq is None:
                    duplicates.append(position)
                else:
                    accepted.append(position)
                    seqs.append(seq)
            results.append(
                AppendResult(
                    accepted=tuple(accepted),
                    duplicates=tuple(duplicates),
                    seqs=tuple(seqs),
                    erased=tuple(sorted(gone)),
                )
            )
        return results

    @staticmethod
    def _insert(
        connection: psycopg.Connection[TupleRow], base: int, rows: Sequence[StoredEvent]
    ) -> list[int]:
        """Insert the new ones of ``rows`` (distinct ids) as base+1.. and move the counter;
        returns their 1-based positions in ``rows``, in seq order."""
        (event_ids, user_ids, item_ids, types, stamps, sessions, queries, recommendations,
         positions) = zip(*rows, strict=True)  # fmt: skip
        cursor = connection.execute(
            _INSERT,
            {
                "base": base,
                "event_id": TextArray.of(event_ids),
                "user_id": TextArray.of(user_ids),
                "item_id": TextArray.of(item_ids),
                "event_type": SmallintArray.of(types),
                "timestamp_ms": BigintArray.of(stamps),
                "session_id": TextArray.of(sessions),
                "query": TextArray.of(queries),
                "recommendation_id": TextArray.of(recommendations),
                "position": IntegerArray.of(positions),
            },
        )
        return [int(row[0]) for row in cursor.fetchall()]

    @staticmethod
    def _refused(
        connection: psycopg.Connection[TupleRow], group: Sequence[PendingBatch]
    ) -> list[set[int]]:
        """For each batch, the positions of events whose user was erased after the batch's
        ``erasure_seen`` (read under the counter lock, so no erasure commits meanwhile)."""
        users = {
            event.user_id
            for pending in group
            if pending.erasure_seen is not None
            for event in pending.events
        }
        latest = _latest_erasures(connection, users)
        refused: list[set[int]] = []
        for pending in group:
            seen = pending.erasure_seen
            refused.append(
                set()
                if seen is None
                else {
                    position
                    for position, event in enumerate(pending.events)
                    if latest.get(event.user_id, 0) > seen
                }
            )
        return refused

    def record_impressions(self, impressions: Sequence[Impression]) -> int:
        """Store impressions durably; returns how many were new (a repeat of a stored
        (recommendation_id, kind), or of one earlier in the batch, is ignored). SHOWN
        ones naming no user take their SERVED one's user; then those of users erased
        after their ``erasure_seen`` are dropped, before repeats are looked for (as
        SQLiteStore). No counter lock: impressions have no seq; the erasure lock, shared."""
        if not impressions:
            return 0
        with self._pool.connection() as connection, connection.transaction():
            # A statement of its own: the reads after it see every erasure committed before
            # (an erasure waits for this transaction, or this for the erasure).
            connection.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_ERASURE_LOCK,))
            stored = _stored_records(connection, {i.recommendation_id for i in impressions})
            resolved = with_served_users(
                impressions,
                {
                    rid: user
                    for (rid, kind), (user, _, _) in stored.items()
                    if kind is ImpressionKind.SERVED
                },
            )
            kept = not_erased(
                resolved, _latest_erasures(connection, erasure_checked_users(resolved))
            )
            erased = connection.execute(
                "SELECT recommendation_id FROM erased_recommendations"
                " WHERE recommendation_id = ANY(%s)",
                (TextArray.of(sorted({i.recommendation_id for i in kept})),),
            ).fetchall()
            kept = not_of_erased_responses(kept, {str(row[0]) for row in erased})
            new = first_new(kept, stored)
            if not new:
                return 0
            # Sorted by key: two writers of the same keys lock them in the same order.
            rows = sorted(new, key=lambda i: (i.recommendation_id, KIND_CODES[i.kind]))
            contexts = sorted({context_of(impression) for impression in rows})
            connection.execute(
                _INSERT_CONTEXTS,
                {
                    name: [context[n] for context in contexts]
                    for n, name in enumerate(("surface", "experiment", "variant", "model_version"))
                },
            )
            inserted = {
                (str(rid), IMPRESSION_KINDS[int(kind)])
                for rid, kind in connection.execute(
                    _INSERT_IMPRESSIONS,
                    {
                        "recommendation_id": TextArray.of([i.recommendation_id for i in rows]),
                        "kind": SmallintArray.of([KIND_CODES[i.kind] for i in rows]),
                        "user_id": TextArray.of([i.user_id for i in rows]),
                        "time_ms": BigintArray.of([i.time_ms for i in rows]),
                        "surface": TextArray.of([i.surface for i in rows]),
                        "experiment": TextArray.of([i.experiment for i in rows]),
                        "variant": TextArray.of([i.variant for i in rows]),
                        "model_version": TextArray.of([i.model_version for i in rows]),
                        "items": TextArray.of([TOKEN_SEPARATOR.join(i.item_ids) for i in rows]),
                    },
                ).fetchall()
            }
            # A concurrent writer may have stored some of them since the lookup: not new.
            if len(inserted) < len(new):
                new = [i for i in new if (i.recommendation_id, i.kind) in inserted]
            deltas = shown_deltas(new, stored)
            if deltas:
                connection.execute(
                    _COUNT_SHOWN,
                    {
                        "item_id": TextArray.of([item for item, _, _ in deltas]),
                        "day": BigintArray.of([day for _, day, _ in deltas]),
                        "shown": BigintArray.of([delta for _, _, delta in deltas]),
                    },
                )
        return len(new)

    def upsert_items(self, items: Iterable[tuple[str, Sequence[str]]]) -> int:
        return self._upsert("items", "item_id", items)

    def upsert_users(self, users: Iterable[tuple[str, Sequence[str]]]) -> int:
        return self._upsert("users", "user_id", users)

    def set_availability(self, item_ids: Sequence[str], available: bool) -> AvailabilityResult:
        wanted = list(dict.fromkeys(item_ids))
        with self._pool.connection() as connection, connection.transaction():
            # Under the counter's row lock: revisions follow commit order (as upserts).
            revision = _one(
                connection.execute(
                    "SELECT revision FROM catalogue_counter WHERE id = 1 FOR UPDATE"
                ),
                "catalogue counter",
            )[0]
            stored: dict[str, bool] = dict(
                connection.execute(
                    "SELECT item_id, available FROM items WHERE item_id = ANY(%s::text[])",
                    (wanted,),
                ).fetchall()
            )
            changing = [item for item in wanted if item in stored and stored[item] != available]
            if changing:
                connection.execute(
                    "UPDATE catalogue_counter SET revision = %s WHERE id = 1", (revision + 1,)
                )
                connection.execute(
                    "UPDATE items SET available = %s, updated_ms = %s, revision = %s"
                    " WHERE item_id = ANY(%s::text[])",
                    (available, _now_ms(), revision + 1, changing),
                )
        unknown = tuple(item for item in wanted if item not in stored)
        return AvailabilityResult(changed=len(changing), unknown_item_ids=unknown)

    def _upsert(self, table: str, key: str, rows: Iterable[tuple[str, Sequence[str]]]) -> int:
        values = [(entity, TOKEN_SEPARATOR.join(tokens)) for entity, tokens in rows]
        # One statement cannot update a row twice: the last entry of an id wins, as it
        # does when the rows are written one after another.
        latest = dict(values)
        if not latest:
            return 0
        names = {"table": sql.Identifier(table), "key": sql.Identifier(key)}
        params: dict[str, Any] = {
            "now": _now_ms(),
            "keys": list(latest),
            "features": list(latest.values()),
        }
        with self._pool.connection() as connection, connection.transaction():
            if table == "items":
                params["revision"] = _one(
                    connection.execute(
                        "UPDATE catalogue_counter SET revision = revision + 1 WHERE id = 1"
                        " RETURNING revision"
                    ),
                    "catalogue counter",
                )[0]
                statement = sql.SQL(
                    "INSERT INTO {table} ({key}, features, updated_ms, revision, added_ms,"
                    " tokens_revision) SELECT k, f, %(now)s, %(revision)s, %(now)s, %(revision)s"
                    " FROM unnest(%(keys)s::text[], %(features)s::text[]) AS t(k, f)"
                    " ON CONFLICT ({key}) DO UPDATE SET features = excluded.features,"
                    " updated_ms = excluded.updated_ms, revision = excluded.revision,"
                    " tokens_revision = excluded.tokens_revision"
                )
            else:
                statement = sql.SQL(
                    "INSERT INTO {table} ({key}, features, updated_ms)"
                    " SELECT k, f, %(now)s FROM unnest(%(keys)s::text[], %(features)s::text[])"
                    " AS t(k, f) ON CONFLICT ({key}) DO UPDATE"
                    " SET features = excluded.features, updated_ms = excluded.updated_ms"
                )
            connection.execute(statement.format(**names), params)
        return len(values)

    def delete_user(self, user_id: str) -> tuple[bool, int]:
        """Erase a user's events, impressions and profile (item_days stays: anonymous
        counts); returns (existed, events deleted). The impressions under the erasure lock
        (exclusive: no impression write interleaves with it), the events under the counter
        lock (no append of the user's events interleaves with it)."""
        hashed = user_hash(user_id)
        with self._pool.connection() as connection, connection.transaction():
            # First, a statement of its own: impression writers holding it finish first and
            # the scan below sees their rows; later ones wait and then see the erasure.
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_ERASURE_LOCK,))
            # A scan, before the counter lock (appends go on meanwhile): erasures are rare
            # and it takes about 0.1 s per million impressions (cached), while an index by
            # user would cost every impression a second random B-tree page written and 18
            # bytes (measured with 10 items each: 6% more bytes, 24% fewer impressions
            # stored per second). Impression writers wait for it.
            mine = connection.execute(
                "DELETE FROM impressions WHERE user_id = %s RETURNING recommendation_id",
                (user_id,),
            ).fetchall()
            # What was shown of the user's responses, whoever it names (a caller's report
            # names no user by default): primary-key lookups, no second scan.
            responses = sorted({row[0] for row in mine})
            connection.execute(
                "DELETE FROM impressions WHERE kind = %s AND recommendation_id = ANY(%s::text[])",
                (KIND_CODES[ImpressionKind.SHOWN], responses),
            )
            # Remembered by id, as erased events are: a report of what was shown, arriving
            # later and naming no user, must not store the list again.
            connection.execute(
                "INSERT INTO erased_recommendations (recommendation_id)"
                " SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (responses,),
            )
            _lock_counter(connection)
            deleted = connection.execute(
                "WITH gone AS (DELETE FROM events WHERE user_id = %s RETURNING event_id)"
                " INSERT INTO erased_events (event_id) SELECT event_id FROM gone",
                (user_id,),
            ).rowcount
            profile = connection.execute(
                "DELETE FROM users WHERE user_id = %s", (user_id,)
            ).rowcount
            # Only a hash is kept: enough to tell the user's devices to purge, once per
            # (numbered) erasure.
            connection.execute(
                "INSERT INTO erased_users (user_hash) VALUES (%s) ON CONFLICT DO NOTHING",
                (hashed,),
            )
            connection.execute("INSERT INTO erasures (user_hash) VALUES (%s)", (hashed,))
        # Impressions alone are data about the user: the user existed.
        return bool(deleted or profile or mine), int(deleted)

    # -- model registry (see EventStore) -------------------------------------------------------
    def save_model(self, version: str, files: ModelFiles) -> bool:
        with self._pool.connection() as connection, connection.transaction():
            # Two trainers saving one version at once: the second waits, then finds it.
            connection.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_MODEL_LOCK, version)
            )
            if connection.execute("SELECT 1 FROM models WHERE version = %s", (version,)).fetchone():
                return False
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO model_files (version, path, chunk, data) VALUES (%s, %s, %s, %b)",
                    [
                        (version, path, number, chunk)
                        for path, data in files
                        for number, chunk in enumerate(model_chunks(data))
                    ],
                )
            connection.execute(
                "INSERT INTO models (version, saved_ms) VALUES (%s, %s)", (version, _now_ms())
            )
        return True

    def has_model(self, version: str) -> bool:
        with self._pool.connection() as connection:
            row = connection.execute("SELECT 1 FROM models WHERE version = %s", (version,))
            return row.fetchone() is not None

    def model_files(self, version: str) -> ModelFiles:
        with self._snapshot() as connection:
            if not connection.execute(
                "SELECT 1 FROM models WHERE version = %s", (version,)
            ).fetchone():
                raise StorageError(
                    f"event store ({self.where}): model {version!r} is not in the store"
                )
            rows = connection.execute(
                "SELECT path, data FROM model_files WHERE version = %s ORDER BY path, chunk",
                (version,),
            ).fetchall()
        return joined_chunks(rows)

    def current_model(self) -> ModelPointer | None:
        with self._pool.connection() as connection:
            row = connection.execute(
                "SELECT version, published FROM model_pointer WHERE id = 1"
            ).fetchone()
        return None if row is None else ModelPointer(version=row[0], published=int(row[1]))

    def publish_model(self, version: str, *, lease: tuple[str, str] | None = None) -> ModelPointer:
        with self._pool.connection() as connection, connection.transaction():
            if not connection.execute(
                "SELECT 1 FROM models WHERE version = %s", (version,)
            ).fetchone():
                raise StorageError(
                    f"event store ({self.where}): model {version!r} is not in the store"
                )
            if (
                lease is not None
                and not connection.execute(
                    # FOR SHARE: the lease cannot be taken over until this publication commits.
                    "SELECT 1 FROM leases WHERE name = %s AND holder = %s"
                    f" AND expires_ms > {_NOW_MS} FOR SHARE",
                    lease,
                ).fetchone()
            ):
                raise LeaseLostError(
                    f"event store ({self.where}): lease {lease[0]!r} is not held by"
                    f" {lease[1]!r}: model {version!r} not published"
                )
            row = _one(
                connection.execute(
                    "INSERT INTO model_pointer (id, version, published) VALUES (1, %s, 1)"
                    " ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
                    " published = model_pointer.published + 1 RETURNING published",
                    (version,),
                ),
                "publish_model",
            )
        return ModelPointer(version=version, published=int(row[0]))

    def prune_models(self, keep: int, protected: Collection[str] = ()) -> list[str]:
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_PINS_LOCK,))
            rows = connection.execute(
                "SELECT version FROM models WHERE version NOT IN"
                " (SELECT version FROM model_pointer) ORDER BY saved DESC OFFSET %s",
                (keep,),
            ).fetchall()
            # Under the pins lock: no pin commits between this read and the delete.
            spared = set(protected) | {
                str(row[0]) for row in connection.execute("SELECT version FROM model_pins")
            }
            gone = [str(row[0]) for row in rows if str(row[0]) not in spared]
            if gone:
                connection.execute("DELETE FROM model_files WHERE version = ANY(%s)", (gone,))
                connection.execute("DELETE FROM models WHERE version = ANY(%s)", (gone,))
        return gone

    def pin_models(self, owner: str, versions: Collection[str]) -> set[str]:
        wanted = sorted(set(versions))
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_PINS_LOCK,))
            missing = {
                str(row[0])
                for row in connection.execute(
                    "SELECT v FROM unnest(%s::text[]) AS t(v)"
                    " WHERE NOT EXISTS (SELECT 1 FROM models WHERE version = t.v)",
                    (wanted,),
                )
            }
            if missing:
                return missing
            connection.execute(
                "DELETE FROM model_pins WHERE owner = %s AND NOT (version = ANY(%s::text[]))",
                (owner, wanted),
            )
            connection.execute(
                "INSERT INTO model_pins (owner, version) SELECT %s, v FROM unnest(%s::text[])"
                " AS t(v) ON CONFLICT DO NOTHING",
                (owner, wanted),
            )
        return set()

    def pinned_models(self) -> set[str]:
        with self._pool.connection() as connection:
            rows = connection.execute("SELECT DISTINCT version FROM model_pins").fetchall()
        return {str(row[0]) for row in rows}

    # -- dashboard (see EventStore) -------------------------------------------------------------
    def record_replica_sample(self, sample: ReplicaSample) -> None:
        figures = sample_figures(sample)
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SAMPLES_LOCK,))
            # Before the insert, by this process's clock (as SQLite's): a sample older than
            # 24 h stays until the next write.
            connection.execute(
                "DELETE FROM replica_samples WHERE time_ms < %s",
                (max(_now_ms() - SAMPLE_RETENTION_MS, INT64_MIN),),
            )
            connection.execute(
                "INSERT INTO replica_samples (time_ms, replica, figures) VALUES (%s, %s, %s)"
                " ON CONFLICT (replica, time_ms) DO UPDATE SET figures = excluded.figures",
                (sample.time_ms, sample.replica, figures),
            )

    def replica_samples(self, since_ms: int) -> list[ReplicaSample]:
        with self._pool.connection() as connection:
            rows = connection.execute(
                "SELECT replica, time_ms, figures FROM replica_samples WHERE time_ms >= %s"
                " ORDER BY replica, time_ms",
                (min(max(since_ms, INT64_MIN), INT64_MAX),),
            ).fetchall()
        return [stored_sample(row) for row in rows]

    def record_audits(self, entries: Sequence[AuditEntry]) -> None:
        for entry in entries:
            check_audit(entry)
        if not entries:
            return
        with self._pool.connection() as connection, connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO audit (time_ms, actor, action, target, detail)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(e.time_ms, e.actor, e.action, e.target, e.detail) for e in entries],
            )

    def audit_entries(self, target: str, limit: int = 50) -> list[AuditEntry]:
        limit = checked_limit(limit)
        if unstorable_text(target):  # never stored (check_audit); the driver would fail
            return []
        with self._pool.connection() as connection:
            rows = connection.execute(
                "SELECT time_ms, actor, action, target, detail FROM audit WHERE target = %s"
                " ORDER BY time_ms DESC, audit_id DESC LIMIT %s",
                (target, limit),
            ).fetchall()
        return [
            AuditEntry(int(t), str(actor), str(a), str(tg), str(d)) for t, actor, a, tg, d in rows
        ]

    def save_evaluation(self, name: str, files: Sequence[tuple[str, bytes]]) -> EvaluationInfo:
        stored = checked_evaluation(name, files)
        now = _now_ms()
        with self._pool.connection() as connection, connection.transaction():
            connection.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_EVALUATION_LOCK, name)
            )
            connection.execute("DELETE FROM evaluation_files WHERE name = %s", (name,))
            connection.execute("DELETE FROM evaluations WHERE name = %s", (name,))
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO evaluation_files (name, file, chunk, data)"
                    " VALUES (%s, %s, %s, %b)",
                    [
                        (name, file, number, chunk)
                        for file, data in stored
                        for number, chunk in enumerate(model_chunks(data))
                    ],
                )
            connection.execute(
                "INSERT INTO evaluations (name, saved_ms) VALUES (%s, %s)", (name, now)
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
            known = connection.execute("SELECT 1 FROM evaluations WHERE name = %s", (name,))
            if known.fetchone() is None:
                raise UnknownIdError(f"name: unknown evaluation {name!r}")
            rows = connection.execute(
                "SELECT data FROM evaluation_files WHERE name = %s AND file = %s ORDER BY chunk",
                (name, file),
            ).fetchall()
        if not rows:
            raise UnknownIdError(f"file: evaluation {name!r} has no file {file!r}")
        return b"".join(bytes(row[0]) for row in rows)

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        with self._pool.connection() as connection:
            row = connection.execute(
                f"INSERT INTO leases (name, holder, expires_ms) VALUES (%s, %s, {_NOW_MS} + %s)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_ms = excluded.expires_ms"
                f" WHERE leases.holder = excluded.holder OR leases.expires_ms <= {_NOW_MS}"
                " RETURNING holder",
                (name, holder, int(ttl_seconds * 1000)),
            ).fetchone()
        return row is not None

    def release_lease(self, name: str, holder: str) -> None:
        with self._pool.connection() as connection:
            connection.execute("DELETE FROM leases WHERE name = %s AND holder = %s", (name, holder))

    def lease_holder(self, name: str) -> str | None:
        with self._pool.connection() as connection:
            row = connection.execute(
                f"SELECT holder FROM leases WHERE name = %s AND expires_ms > {_NOW_MS}", (name,)
            ).fetchone()
        return None if row is None else str(row[0])

    # -- reads --------------------------------------------------------------------------------
    def erased_among(self, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` were erased and have no events since."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return set()
        with self._pool.connection() as connection:
            rows = connection.execute(
                "SELECT u FROM unnest(%s::text[], %s::text[]) AS t(u, h)"
                " WHERE EXISTS (SELECT 1 FROM erased_users WHERE user_hash = t.h)"
                " AND NOT EXISTS (SELECT 1 FROM events WHERE user_id = t.u)",
                (users, [user_hash(user) for user in users]),
            ).fetchall()
        return {row[0] for row in rows}

    def erasure_state(self, user_id: str) -> tuple[int, bool]:
        """(latest_erasure, was_erased) for the user, from one snapshot."""
        with self._snapshot() as connection:
            latest, erased = _one(
                connection.execute(
                    "SELECT (SELECT COALESCE(MAX(erasure_id), 0) FROM erasures"
                    " WHERE user_hash = %(hash)s),"
                    " EXISTS (SELECT 1 FROM erased_users WHERE user_hash = %(hash)s)"
                    " AND NOT EXISTS (SELECT 1 FROM events WHERE user_id = %(user)s)",
                    {"hash": user_hash(user_id), "user": user_id},
                ),
                "erasure_state",
            )
        return int(latest), bool(erased)

    def latest_erasure(self, user_id: str) -> int:
        """The id of the user's latest erasure (growing; 0: never erased)."""
        with self._pool.connection() as connection:
            row = _one(
                connection.execute(
                    "SELECT COALESCE(MAX(erasure_id), 0) FROM erasures WHERE user_hash = %s",
                    (user_hash(user_id),),
                ),
                "latest_erasure",
            )
        return int(row[0])

    def was_erased(self, user_id: str) -> bool:
        """Whether the user was erased (and has not come back with new events since)."""
        return self.erasure_state(user_id)[1]

    def events_for_user(self, user_id: str, after_seq: int = 0) -> list[tuple[int, StoredEvent]]:
        """The user's events stored after ``after_seq``, oldest first, with their seq."""
        with self._pool.connection() as connection:
            rows = connection.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = %s AND seq > %s ORDER BY seq",
                (user_id, after_seq),
            ).fetchall()
        return _seq_events(rows)

    def user_history(self, user_id: str) -> tuple[int, list[tuple[int, StoredEvent]]]:
        """The user's events with their seqs, and the store's last seq, from one snapshot."""
        with self._snapshot() as connection:
            last = int(_one(connection.execute(_LAST_SEQ), "seq counter")[0])
            rows = connection.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = %s ORDER BY seq",
                (user_id,),
            ).fetchall()
        return last, _seq_events(rows)

    def user_view(self, user_id: str, after_seq: int = 0) -> UserView:
        """The user's events after ``after_seq``, latest erasure and profile, and the
        store's last seq and catalogue revision: one statement, one snapshot."""
        with self._pool.connection() as connection:
            rows = connection.execute(
                _USER_VIEW, {"hash": user_hash(user_id), "user": user_id, "after": after_seq}
            ).fetchall()
        if not rows:
            raise StorageError(f"event store ({self.where}): user_view: no seq counter row")
        last, erasure, profile, revision = rows[0][:4]
        return UserView(
            last_seq=int(last),
            events=_seq_events(row[4:] for row in rows if row[4] is not None),
            latest_erasure=int(erasure),
            profile=split_tokens(profile),
            catalogue_revision=int(revision),
        )

    def catalogue_changes(self, after_revision: int = 0) -> tuple[int, list[CatalogueEntry]]:
        with self._snapshot() as connection:
            revision = int(_one(connection.execute(_CATALOGUE_REVISION), "catalogue")[0])
            rows = connection.execute(
                "SELECT item_id, features, available, added_ms, tokens_revision, item_key"
                " FROM items WHERE revision > %s ORDER BY revision, item_id",
                (after_revision,),
            ).fetchall()
        return revision, [
            CatalogueEntry(
                str(item),
                split_tokens(features),
                bool(available),
                int(added or 0),
                int(tr or 0),
                int(key),
            )
            for item, features, available, added, tr, key in rows
        ]

    def catalogue_revision(self) -> int:
        with self._pool.connection() as connection:
            return int(_one(connection.execute(_CATALOGUE_REVISION), "catalogue")[0])

    def last_erasure(self) -> int:
        with self._pool.connection() as connection:
            row = connection.execute("SELECT COALESCE(MAX(erasure_id), 0) FROM erasures")
            return int(_one(row, "last_erasure")[0])

    def last_seq(self) -> int:
        """The counter: the highest seq ever given (it never goes back, not even when an
        erasure deletes the newest events)."""
        with self._pool.connection() as connection:
            return int(_one(connection.execute(_LAST_SEQ), "seq counter")[0])

    def iter_events(
        self, after_seq: int = 0, batch: int = 10_000
    ) -> Iterator[tuple[int, StoredEvent]]:
        """Every stored event after ``after_seq`` in seq order, read ``batch`` at a time
        (no connection is held between batches)."""
        last = after_seq
        while True:
            with self._pool.connection() as connection:
                rows = connection.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > %s ORDER BY seq LIMIT %s",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            yield from _seq_events(rows)
            last = int(rows[-1][0])

    def events_between(
        self, from_ms: int, to_ms: int, batch: int = 10_000
    ) -> Iterator[StoredEvent]:
        """Every stored event with ``from_ms <= timestamp_ms < to_ms``, by (timestamp_ms,
        event_id), fetched ``batch`` at a time through a server-side cursor of one
        snapshot (a scan and a sort: events have no index by time, which every append
        would pay for). Holds a pooled connection while the caller iterates."""
        from_ms, to_ms = clamped_range(from_ms, to_ms)
        with self._snapshot() as connection, connection.cursor(name="events_between") as cursor:
            cursor.execute(
                f"SELECT {_EVENT_FIELDS} FROM events"
                " WHERE timestamp_ms >= %s AND timestamp_ms < %s ORDER BY timestamp_ms, event_id",
                (from_ms, to_ms),
            )
            while rows := cursor.fetchmany(batch):
                yield from map(_event, rows)

    def impressions_between(
        self, from_ms: int, to_ms: int, batch: int = 10_000
    ) -> Iterator[Impression]:
        """Every stored impression with ``from_ms <= time_ms < to_ms``, by (time_ms,
        recommendation_id, kind), fetched ``batch`` at a time through a server-side cursor
        of one snapshot. Holds a pooled connection while the caller iterates."""
        from_ms, to_ms = clamped_range(from_ms, to_ms)
        with self._snapshot() as connection:
            contexts = impression_contexts(
                connection.execute(f"SELECT {CONTEXT_COLUMNS} FROM impression_contexts")
            )
            with connection.cursor(name="impressions_between") as cursor:
                cursor.execute(
                    "SELECT recommendation_id, kind, user_id, time_ms, context_id, items"
                    " FROM impressions WHERE time_ms >= %s AND time_ms < %s"
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
                " FROM impressions WHERE recommendation_id = ANY(%s)"
                " ORDER BY recommendation_id, kind",
                (TextArray.of(sorted(set(recommendation_ids))),),
            ).fetchall()
            contexts = impression_contexts(
                connection.execute(
                    f"SELECT {CONTEXT_COLUMNS} FROM impression_contexts WHERE context_id = ANY(%s)",
                    (IntegerArray.of(sorted({int(row[4]) for row in rows})),),
                )
            )
        return [stored_impression(row, contexts) for row in rows]

    def item_event_counts(self, after_seq: int = 0) -> tuple[int, list[tuple[str, EventType, int]]]:
        """Events per item and type stored after ``after_seq``, and the last seq they run
        to (one snapshot)."""
        with self._snapshot() as connection:
            last = int(_one(connection.execute(_LAST_SEQ), "seq counter")[0])
            rows = connection.execute(
                "SELECT item_id, event_type, COUNT(*) FROM events WHERE seq > %s AND seq <= %s"
                " GROUP BY item_id, event_type",
                (after_seq, last),
            ).fetchall()
        return last, [(str(item), EventType(kind), int(count)) for item, kind, count in rows]

    def item_feedback(self, item_id: str, since_ms: int) -> tuple[int, int]:
        """(shown, clicked) of the item on the days from ``since_ms``'s on (item_days)."""
        if unstorable_text(item_id):  # never stored; PostgreSQL would refuse it
            return 0, 0
        with self._pool.connection() as connection:
            shown, clicked = _one(
                connection.execute(_ITEM_FEEDBACK, {"since": first_day(since_ms), "item": item_id}),
                "item_feedback",
            )
        return int(shown), int(clicked)

    def item_features(self) -> dict[str, tuple[str, ...]]:
        return dict(self._iter_features("items", "item_id"))

    def user_features(self) -> dict[str, tuple[str, ...]]:
        return dict(self._iter_features("users", "user_id"))

    def iter_item_features(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Every catalogue item and its tokens, streamed in pages (no connection is held
        between them)."""
        yield from self._iter_features("items", "item_id")

    def _iter_features(self, table: str, key: str) -> Iterator[tuple[str, tuple[str, ...]]]:
        names = {"table": sql.Identifier(table), "key": sql.Identifier(key)}
        first = sql.SQL("SELECT {key}, features FROM {table} ORDER BY {key} LIMIT %s")
        after = sql.SQL(
            "SELECT {key}, features FROM {table} WHERE {key} > %s ORDER BY {key} LIMIT %s"
        )
        last: str | None = None
        while True:
            with self._pool.connection() as connection:
                if last is None:
                    cursor = connection.execute(first.format(**names), (_FEATURE_PAGE,))
                else:
                    cursor = connection.execute(after.format(**names), (last, _FEATURE_PAGE))
                rows = cursor.fetchall()
            for entity, features in rows:
                yield entity, split_tokens(features)
            if len(rows) < _FEATURE_PAGE:
                return
            last = rows[-1][0]

    def counts(self) -> StoreCounts:
        with self._pool.connection() as connection:
            events, users_with_events, items, users = _one(
                connection.execute(
                    "SELECT (SELECT COUNT(*) FROM events),"
                    " (SELECT COUNT(DISTINCT user_id) FROM events),"
                    " (SELECT COUNT(*) FROM items), (SELECT COUNT(*) FROM users)"
                ),
                "counts",
            )
        return StoreCounts(
            events=int(events),
            users_with_events=int(users_with_events),
            items=int(items),
            users=int(users),
        )

    def integrity_check(self) -> str:
        """``"ok"``, or what is wrong: the seq counter (one row, at or above every stored
        seq), erased ids stored again, erased users without a numbered erasure, the
        schema version."""
        problems: list[str] = []
        with self._snapshot() as connection:
            counters, counter, highest, resurrected, unnumbered, version = _one(
                connection.execute(
                    "SELECT (SELECT COUNT(*) FROM seq_counter), (SELECT MAX(last_seq) FROM"
                    " seq_counter), (SELECT COALESCE(MAX(seq), 0) FROM events),"
                    " (SELECT COUNT(*) FROM events e JOIN erased_events x USING (event_id)),"
                    " (SELECT COUNT(*) FROM erased_users u WHERE NOT EXISTS"
                    "  (SELECT 1 FROM erasures r WHERE r.user_hash = u.user_hash)),"
                    " (SELECT value FROM meta WHERE key = 'schema_version')"
                ),
                "integrity_check",
            )
        if counters != 1:
            problems.append(f"seq_counter has {counters} rows (expected 1)")
        elif counter < highest:
            problems.append(f"seq counter {counter} is below the highest stored seq {highest}")
        if resurrected:
            problems.append(f"{resurrected} stored events have erased ids")
        if unnumbered:
            problems.append(f"{unnumbered} erased users have no numbered erasure")
        if version != str(SCHEMA_VERSION):
            problems.append(f"schema_version is {version!r} (expected {SCHEMA_VERSION})")
        return "; ".join(problems) if problems else "ok"


__all__ = ["SCHEMA_VERSION", "PostgresStore"]
