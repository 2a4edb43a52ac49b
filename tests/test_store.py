"""The SQLite store's own machinery: durability across kill -9, WAL, schema upgrades, the
user index merged in bulk. The contract every store passes (idempotency, erasure,
ordering, ...) is tests/test_store_contract.py, run on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfrank.core.errors import StorageError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.storage import AuditEntry, ReplicaSample
from shelfrank.server.store import SCHEMA_VERSION, SQLiteStore
from tests.test_store_contract import (
    COUNTED_AT_WRITE,
    COUNTED_FROM_STORED,
    DAY0,
    counted,
    fill_for_counting,
    imp,
    per_day,
    tokens_only,
)


def ev(
    event_id: str, user: str = "u1", item: str = "i1", kind: EventType = EventType.VIEW
) -> StoredEvent:
    return StoredEvent(event_id, user, item, kind, 1_700_000_000_000)


def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
    """A child process appends, reports the ack, then is killed without closing the store."""
    code = f"""
import os, signal, sys
from shelfrank.core.events import StoredEvent
from shelfrank.server.storage import AppendResult
from shelfrank.server.store import SQLiteStore
from shelfrank.core.events import EventType
store = SQLiteStore({str(tmp_path / "s.db")!r})
for batch in range(20):
    rows = [StoredEvent(f"e{{batch}}-{{i}}", "u", "i", EventType.VIEW, 1) for i in range(50)]
    store.append_events(rows)
    print(batch, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == -9
    acknowledged = len(done.stdout.split())
    store = SQLiteStore(tmp_path / "s.db")
    assert store.counts().events == acknowledged * 50 == 1000
    assert store.integrity_check() == "ok"


def test_kill_9s_amid_appends_and_merges_leave_every_history_whole(tmp_path: Path) -> None:
    """A child appends 50-event batches with a merge every 120 events (so a kill often lands
    in a merge's transaction); killed three times, each restart carries on. Every
    acknowledged event is stored, and every user's history equals the stored events."""
    path = tmp_path / "s.db"
    code = f"""
import itertools, sys
from shelfrank.core.events import StoredEvent
from shelfrank.server.store import SQLiteStore
from shelfrank.core.events import EventType
store = SQLiteStore({str(path)!r}, merge_every=120)
for batch in itertools.count():
    tag = f"{{sys.argv[1]}}-{{batch}}"
    store.append_events(
        [StoredEvent(f"{{tag}}-{{i}}", f"u{{i % 13}}", "i", EventType.VIEW, 1) for i in range(50)]
    )
    print(tag, flush=True)
"""
    acknowledged: list[str] = []
    for run in range(3):
        with subprocess.Popen(
            [sys.executable, "-c", code, f"r{run}"], stdout=subprocess.PIPE, text=True
        ) as child:
            assert child.stdout is not None
            for _ in range(15 + 7 * run):  # acks seen before the kill
                acknowledged.append(child.stdout.readline().strip())
            child.send_signal(signal.SIGKILL)
            acknowledged += child.stdout.read().split()  # acks printed before it died
            assert child.wait(timeout=60) == -signal.SIGKILL
    store = SQLiteStore(path, merge_every=120)
    stored = list(store.iter_events())
    ids = {event.event_id for _, event in stored}
    assert {f"{tag}-{i}" for tag in acknowledged for i in range(50)} <= ids
    for user in (f"u{i}" for i in range(13)):
        expected = [(seq, e.event_id) for seq, e in stored if e.user_id == user]
        assert [(seq, e.event_id) for seq, e in store.user_history(user)[1]] == expected
    assert store.integrity_check() == "ok"
    with sqlite3.connect(path) as raw:
        upto = int(
            raw.execute("SELECT value FROM meta WHERE key = 'user_events_upto'").fetchone()[0]
        )
        assert raw.execute("SELECT COUNT(*) FROM user_events").fetchone() == (
            sum(1 for seq, _ in stored if seq <= upto),
        )
    assert upto > 0


def test_an_erased_profile_leaves_the_file(tmp_path: Path) -> None:
    """secure_delete: an erased user's rows are overwritten on disk, not only unlinked
    (the erasure itself is in the contract suite, tests/test_store_contract.py)."""
    store = SQLiteStore(tmp_path / "s.db")
    store.append_events([ev("a"), ev("b"), ev("c", user="u2")])
    store.upsert_users([("u1", ["segment=a"])])
    assert store.delete_user("u1") == (True, 2)
    store.checkpoint()
    raw = (tmp_path / "s.db").read_bytes()
    assert b"segment=a" not in raw


def test_a_store_from_before_numbered_erasures_numbers_its_erased_users(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.delete_user("u1")
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as raw:  # as an older shelfrank left it
        raw.execute("DROP TABLE erasures")
    assert SQLiteStore(tmp_path / "s.db").latest_erasure("u1") > 0


# -- the user index: merged in bulk, the tail found through each process's map ----------------
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.integers(0, 1),
            st.lists(
                st.tuples(st.integers(0, 15), st.sampled_from(["u1", "u2", "u3"])),
                min_size=1,
                max_size=6,
            ),
        ),
        st.tuples(st.just("delete"), st.integers(0, 1), st.sampled_from(["u1", "u2", "u3"])),
        st.tuples(st.just("reopen"), st.integers(0, 1), st.just("")),
    ),
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations, st.integers(1, 6))
def test_every_user_history_is_complete_across_merges_erasures_and_two_writers(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, object]], every: int
) -> None:
    """Two EventStores on one file (two processes): each sees every user's full history,
    whichever of them appended, merged or erased, including tail events it never wrote."""
    path = tmp_path_factory.mktemp("u") / "s.db"
    stores = [SQLiteStore(path, merge_every=every), SQLiteStore(path, merge_every=every)]
    stored: dict[str, str] = {}  # event id -> user, in the order stored
    erased: set[str] = set()
    for op, index, arg in ops:
        if op == "append":
            batch = [ev(f"e{n}-{user}", user=user) for n, user in arg]  # type: ignore[attr-defined]
            stores[index].append_events(batch)
            for event in batch:
                if event.event_id not in stored and event.event_id not in erased:
                    stored[event.event_id] = event.user_id
        elif op == "delete":
            stores[index].delete_user(str(arg))
            gone = [event_id for event_id, user in stored.items() if user == arg]
            erased.update(gone)
            for event_id in gone:
                del stored[event_id]
        else:
            stores[index].close()
            stores[index] = SQLiteStore(path, merge_every=every)
        for store in stores:
            for user in ("u1", "u2", "u3"):
                expected = [event_id for event_id, owner in stored.items() if owner == user]
                last, history = store.user_history(user)
                assert [e.event_id for _, e in history] == expected
                assert last == store.last_seq()
                assert [e.event_id for _, e in store.events_for_user(user)] == expected
            assert store.counts().users_with_events == len(set(stored.values()))
    assert stores[0].integrity_check() == "ok"


def test_a_merge_indexes_the_tail_by_user_in_one_step(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", merge_every=4)
    store.append_events([ev("a"), ev("b", user="u2"), ev("c")])
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM user_events").fetchone() == (0,)
    store.append_events([ev("d", user="u2")])  # the 4th event since the watermark: merge
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert raw.execute("SELECT user_id, seq FROM user_events").fetchall() == [
            ("u1", 1),
            ("u1", 3),
            ("u2", 2),
            ("u2", 4),
        ]
        assert raw.execute("SELECT value FROM meta WHERE key = 'user_events_upto'").fetchone() == (
            "4",
        )
        indexes = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert "events_by_user" not in indexes  # no per-insert index by user


def test_a_reader_whose_snapshot_predates_a_merge_still_sees_the_tail(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", merge_every=3)
    store.append_events([ev("a"), ev("b", user="u2")])
    assert len(store.user_history("u1")[1]) == 1  # the map now holds seqs 1 and 2
    reader = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM events").fetchone() == (2,)  # snapshot taken
    store.append_events([ev("c")])  # merges (1, 3]: the map forgets them
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert raw.execute("SELECT value FROM meta WHERE key = 'user_events_upto'").fetchone() == (
            "3",
        )
    # The old snapshot's watermark is 0 and its last seq 2: both tail events are found.
    rows = store._recent.rows(reader, "u1", 0, 2, 0)
    assert [row[1] for row in rows] == ["a"]
    reader.execute("COMMIT")
    reader.close()


def snapshot_of(path: Path) -> tuple[sqlite3.Connection, int, int]:
    """A read transaction on ``path``: the connection, its last seq and latest erasure."""
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    last, erasure = reader.execute(
        "SELECT (SELECT MAX(seq) FROM events), (SELECT COALESCE(MAX(erasure_id), 0) FROM erasures)"
    ).fetchone()
    return reader, int(last), int(erasure)


def test_a_reader_whose_snapshot_predates_an_erasure_still_sees_the_tail(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.append_events([ev("a"), ev("b", user="u2"), ev("c")])
    assert len(store.user_history("u1")[1]) == 2  # the map holds the tail
    reader, last, erasure = snapshot_of(tmp_path / "s.db")
    store.delete_user("u1")  # its seqs leave the map
    rows = store._recent.rows(reader, "u1", 0, last, erasure)
    assert [row[1] for row in rows] == ["a", "c"]  # all the old snapshot holds
    reader.execute("COMMIT")
    reader.close()


def test_an_erasure_in_one_process_keeps_the_users_later_events_in_anothers_map(
    tmp_path: Path,
) -> None:
    """Process A erases u1 while process B stores u1's next event and a reader in A sees
    it before A drops u1's erased entries: only the erased seqs leave A's map."""
    path = tmp_path / "s.db"
    a, b = SQLiteStore(path), SQLiteStore(path)
    a.append_events([ev("a"), ev("b", user="u2")])
    assert len(a.user_history("u1")[1]) == 1
    erased_seqs = [seq for seq, _ in a.events_for_user("u1")]
    b.delete_user("u1")  # stands for A's own erasure, committed...
    b.append_events([ev("c")])  # ...then B stores u1's next event...
    assert [e.event_id for _, e in a.events_for_user("u1")] == ["c"]  # ...A reads it...
    a._recent.erased("u1", erased_seqs, b.latest_erasure("u1"))  # ...A drops what it erased
    assert [e.event_id for _, e in a.events_for_user("u1")] == ["c"]
    assert not a.was_erased("u1")


def test_a_schema_1_store_moves_its_user_index_into_bulk_merged_form(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as raw:  # as shelfrank with schema 1 left it
        raw.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
                event_type INTEGER NOT NULL, timestamp_ms INTEGER NOT NULL,
                session_id TEXT NOT NULL DEFAULT '', query TEXT NOT NULL DEFAULT '');
            CREATE INDEX events_by_user ON events (user_id, seq);
            INSERT INTO events (event_id, user_id, item_id, event_type, timestamp_ms)
                VALUES ('a', 'u1', 'i1', 1, 5), ('b', 'u2', 'i1', 3, 6), ('c', 'u1', 'i2', 1, 7);
            """
        )
    store = SQLiteStore(path)
    assert [e.event_id for _, e in store.events_for_user("u1")] == ["a", "c"]
    assert {(e.recommendation_id, e.position) for _, e in store.iter_events()} == {("", 0)}
    assert store.append_events([ev("c"), ev("d", user="u2")]).accepted == (1,)
    assert [e.event_id for _, e in store.events_for_user("u2")] == ["b", "d"]
    assert store.delete_user("u1") == (True, 2)
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert raw.execute("SELECT user_id, seq FROM user_events").fetchall() == [("u2", 2)]
        names = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert "events_by_user" not in names
    assert SQLiteStore(path).integrity_check() == "ok"


def test_a_schema_2_catalogue_becomes_revision_1(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as raw:  # the items table as schema 2 left it
        raw.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '2'), ('user_events_upto', '0');
            CREATE TABLE items (item_id TEXT PRIMARY KEY, features TEXT NOT NULL,
                                updated_ms INTEGER NOT NULL) WITHOUT ROWID;
            INSERT INTO items VALUES ('b', 'x=1', 5), ('a', '', 6);
            """
        )
    raw.close()
    store = SQLiteStore(path)
    assert tokens_only(store.catalogue_changes()) == (1, [("a", ()), ("b", ("x=1",))])
    # Schema 4: every item was available; it was first stored when last updated.
    assert [(e.available, e.added_ms) for e in store.catalogue_changes()[1]] == [
        (True, 6),
        (True, 5),
    ]
    assert tokens_only(store.catalogue_changes(1)) == (1, [])
    store.upsert_items([("c", ["y=2"])])
    assert tokens_only(store.catalogue_changes(1)) == (2, [("c", ("y=2",))])
    store.close()
    assert tokens_only(SQLiteStore(path).catalogue_changes(1)) == (2, [("c", ("y=2",))])


def test_a_schema_4_store_gets_attribution_and_impressions_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, merge_every=2)
    old = [ev("a"), ev("b", user="u2"), ev("c")]
    store.append_events(old[:2])  # merged into the user index
    store.append_events(old[2:])  # in the tail
    store.close()
    with sqlite3.connect(path) as raw:  # as schema 4 left it
        raw.executescript(
            """
            DROP TABLE impressions;
            DROP TABLE impression_contexts;
            DROP TABLE model_pins;
            DROP TABLE replica_samples;
            DROP TABLE audit;
            DROP TABLE evaluations;
            DROP TABLE evaluation_files;
            DROP TABLE item_days;
            ALTER TABLE events DROP COLUMN recommendation_id;
            ALTER TABLE events DROP COLUMN position;
            UPDATE meta SET value = '4' WHERE key = 'schema_version';
            """
        )
    raw.close()
    store = SQLiteStore(path, merge_every=2)
    assert [e for _, e in store.iter_events()] == old  # no response known: "", 0
    clicked = ev("d")._replace(recommendation_id="r1", position=2)
    store.append_events([clicked])
    assert [e for _, e in store.user_view("u1").events] == [old[0], old[2], clicked]
    assert store.record_impressions([imp("r1"), imp("r1")]) == 1
    assert store.delete_user("u1") == (True, 3)
    assert list(store.impressions_between(0, 2**62)) == []
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
    raw.close()
    assert SQLiteStore(path).integrity_check() == "ok"


def test_a_schema_5_store_gets_model_pins_and_keeps_its_models(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    for version in ("m1", "m2", "m3", "m4"):
        store.save_model(version, [("manifest.json", version.encode())])
    store.publish_model("m4")
    store.record_impressions([imp("r1")])
    store.close()
    with sqlite3.connect(path) as raw:  # as schema 5 left it
        raw.executescript(
            """
            DROP TABLE model_pins;
            DROP TABLE replica_samples;
            DROP TABLE audit;
            DROP TABLE evaluations;
            DROP TABLE evaluation_files;
            DROP TABLE item_days;
            UPDATE meta SET value = '5' WHERE key = 'schema_version';
            """
        )
    raw.close()
    store = SQLiteStore(path)
    assert store.pinned_models() == set()
    assert store.model_files("m1") == [("manifest.json", b"m1")]
    assert store.pin_models("experiments", ["m1"]) == set()
    assert sorted(store.prune_models(keep=1)) == ["m2"]
    assert [v for v in ("m1", "m2", "m3", "m4") if store.has_model(v)] == ["m1", "m3", "m4"]
    assert list(store.impressions_between(0, 2**62)) == [imp("r1")]
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        # A pin names a stored model: a process that reads no pins cannot delete it.
        raw.execute("PRAGMA foreign_keys=ON")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            raw.execute("DELETE FROM models WHERE version = 'm1'")
    raw.close()
    assert SQLiteStore(path).integrity_check() == "ok"


def test_a_schema_6_store_gets_the_dashboard_tables_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.append_events([ev("a")])
    store.save_model("m1", [("manifest.json", b"m1")])
    store.pin_models("experiments", ["m1"])
    store.record_impressions([imp("r1")])
    store.close()
    with sqlite3.connect(path) as raw:  # as schema 6 left it
        raw.executescript(
            """
            DROP TABLE replica_samples;
            DROP TABLE audit;
            DROP TABLE evaluations;
            DROP TABLE evaluation_files;
            DROP TABLE item_days;
            UPDATE meta SET value = '6' WHERE key = 'schema_version';
            """
        )
    raw.close()
    store = SQLiteStore(path)
    assert [e.event_id for _, e in store.iter_events()] == ["a"]
    assert store.pinned_models() == {"m1"}
    assert store.model_files("m1") == [("manifest.json", b"m1")]
    assert list(store.impressions_between(0, 2**62)) == [imp("r1")]
    assert store.replica_samples(0) == []
    assert store.audit_entries("item:a") == []
    assert store.evaluations() == []
    now = int(time.time() * 1000)
    store.record_replica_sample(ReplicaSample("r1", now, {"events_per_s": 1.0}))
    store.record_audits([AuditEntry(now, "ops", "availability", "item:a", "available=false")])
    saved = store.save_evaluation("e1", [("report.json", b"{}")])
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
    raw.close()
    store = SQLiteStore(path)
    assert store.replica_samples(0) == [ReplicaSample("r1", now, {"events_per_s": 1.0})]
    assert [a.detail for a in store.audit_entries("item:a")] == ["available=false"]
    assert store.evaluations() == [saved]
    assert store.evaluation_file("e1", "report.json") == b"{}"
    assert store.integrity_check() == "ok"
    store.close()


def test_a_schema_8_catalogue_gets_item_keys_in_revision_order(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.upsert_items([("b", ["x=1"]), ("a", [])])
    store.upsert_items([("c", [])])
    store.close()
    with sqlite3.connect(path) as raw:  # as schema 8 left it: items without keys
        raw.executescript(
            """
            DROP INDEX items_by_key;
            ALTER TABLE items DROP COLUMN item_key;
            UPDATE meta SET value = '8' WHERE key = 'schema_version';
            """
        )
    raw.close()
    store = SQLiteStore(path)
    assert [(e.item_id, e.key) for e in store.catalogue_changes()[1]] == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
    ]
    store.upsert_items([("d", []), ("a", ["x=2"])])  # a new item: the next key; a keeps its
    assert {e.item_id: e.key for e in store.catalogue_changes()[1]} == {
        "a": 1,
        "b": 2,
        "c": 3,
        "d": 4,
    }
    assert store.integrity_check() == "ok"
    store.close()


def test_a_schema_7_store_counts_its_impressions_and_clicks_per_item_and_day(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    fill_for_counting(store)
    assert counted(store) == COUNTED_AT_WRITE
    store.close()
    with sqlite3.connect(path) as raw:  # as schema 7 left it
        raw.executescript(
            """
            DROP TABLE item_days;
            UPDATE meta SET value = '7' WHERE key = 'schema_version';
            """
        )
    raw.close()
    store = SQLiteStore(path)
    assert counted(store) == COUNTED_FROM_STORED
    assert [e.event_id for _, e in store.iter_events()] == ["early", "c1", "c2", "c3"]
    assert len(list(store.impressions_between(0, 2**62))) == 4
    store.close()
    with sqlite3.connect(path) as raw:
        assert (
            raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            == (str(SCHEMA_VERSION),)
            == ("10",)
        )
    raw.close()
    # Counted once: a second open counts nothing again, and writes go on counting.
    store = SQLiteStore(path)
    assert counted(store) == COUNTED_FROM_STORED
    store.record_impressions([imp("r3", time_ms=DAY0, items=("b",))])
    assert per_day(store, "b", days=1) == [(2, 0)]
    assert store.integrity_check() == "ok"
    store.close()


def test_the_response_an_event_answers_is_read_from_the_merged_index_and_the_tail(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.db", merge_every=3)
    events = [ev(f"e{i}")._replace(recommendation_id=f"r{i}", position=i) for i in range(5)]
    seqs = store.append_events(events[:3]).seqs + store.append_events(events[3:]).seqs
    # The first three are in the user index, the others in the tail.
    other = SQLiteStore(tmp_path / "s.db", merge_every=3)  # its tail map starts empty
    for reader in (store, other):
        assert reader.user_view("u1").events == list(zip(seqs, events, strict=True))
        assert reader.user_history("u1")[1] == list(zip(seqs, events, strict=True))


def test_the_user_view_spans_the_merged_index_and_the_tail(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", merge_every=3)
    other = SQLiteStore(tmp_path / "s.db", merge_every=3)  # another process, its own tail map
    seqs: list[int] = []
    for i in range(8):  # merges after every third event: some indexed, some in the tail
        seqs += store.append_events([ev(f"e{i}", user="u1" if i % 2 == 0 else "u2")]).seqs
    for reader in (store, other):
        for after in [0, *seqs]:
            view = reader.user_view("u1", after_seq=after)
            assert view.events == [
                (seq, e) for seq, e in reader.events_for_user("u1") if seq > after
            ]
            assert view.last_seq == seqs[-1]
    assert [e.event_id for _, e in other.user_view("u1", after_seq=seqs[1]).events] == [
        "e2",
        "e4",
        "e6",
    ]


def test_merge_every_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="merge_every: must be at least 1, got 0"):
        SQLiteStore(tmp_path / "s.db", merge_every=0)


def test_sqlite_errors_leave_the_store_as_storage_errors(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "events.sqlite3")
    try:

        def broken(*args: object) -> object:
            raise sqlite3.OperationalError("disk I/O error")

        store._read = broken  # type: ignore[method-assign]
        with pytest.raises(StorageError, match="last_seq: disk I/O error"):
            store.last_seq()
        with pytest.raises(StorageError, match="iter_events"):
            list(store.iter_events())
    finally:
        del store._read
        store.close()


def test_opening_a_file_that_is_no_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="open: file is not a database"):
        SQLiteStore(path)
