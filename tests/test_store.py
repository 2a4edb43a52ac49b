"""The event store on a real SQLite file: durability, idempotency, erasure."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfrank.core.errors import StorageError
from shelfrank.core.events import EventType
from shelfrank.server.store import AppendResult, EventStore, StoredEvent


def ev(
    event_id: str, user: str = "u1", item: str = "i1", kind: EventType = EventType.VIEW
) -> StoredEvent:
    return StoredEvent(event_id, user, item, kind, 1_700_000_000_000)


def test_append_is_idempotent_within_and_across_batches(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.db")
    first = store.append_events([ev("a"), ev("b"), ev("a")])
    assert first.accepted == (0, 1)
    assert first.duplicates == (2,)
    second = store.append_events([ev("b"), ev("c")])
    assert second.accepted == (1,)
    assert second.duplicates == (0,)
    assert [e.event_id for _, e in store.events_for_user("u1")] == ["a", "b", "c"]
    assert store.counts().events == 3


def test_acknowledged_events_and_dedup_survive_a_restart(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.db")
    store.append_events([ev("a"), ev("b", kind=EventType.PURCHASE)])
    store.upsert_items([("i1", ["category=shoes", "brand=acme"])])
    store.close()
    again = EventStore(tmp_path / "s.db")
    assert again.append_events([ev("a")]).duplicates == (0,)
    assert [e.event_type for _, e in again.events_for_user("u1")] == [
        EventType.VIEW,
        EventType.PURCHASE,
    ]
    assert again.item_features() == {"i1": ("category=shoes", "brand=acme")}
    assert again.integrity_check() == "ok"


def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
    """A child process appends, reports the ack, then is killed without closing the store."""
    code = f"""
import os, signal, sys
from shelfrank.server.store import AppendResult, EventStore, StoredEvent
from shelfrank.core.events import EventType
store = EventStore({str(tmp_path / "s.db")!r})
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
    store = EventStore(tmp_path / "s.db")
    assert store.counts().events == acknowledged * 50 == 1000
    assert store.integrity_check() == "ok"


def test_upsert_replaces_features(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.db")
    assert store.upsert_users([("u1", ["segment=a"]), ("u2", [])]) == 2
    store.upsert_users([("u1", ["segment=b"])])
    assert store.user_features() == {"u1": ("segment=b",), "u2": ()}


def test_delete_user_erases_rows_and_replays_do_not_resurrect(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.db")
    store.append_events([ev("a"), ev("b"), ev("c", user="u2")])
    store.upsert_users([("u1", ["segment=a"])])
    assert store.delete_user("u1") == (True, 2)
    assert store.delete_user("u1") == (False, 0)
    assert store.events_for_user("u1") == []
    assert "u1" not in store.user_features()
    replay = store.append_events([ev("a"), ev("b"), ev("d")])
    assert replay.duplicates == (0, 1)
    assert [e.event_id for _, e in store.events_for_user("u1")] == ["d"]
    store.checkpoint()
    raw = (tmp_path / "s.db").read_bytes()
    assert b"segment=a" not in raw


def test_erasures_are_numbered_per_user_and_survive_a_reopen(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.db")
    assert store.latest_erasure("u1") == 0
    store.delete_user("u1")
    first = store.latest_erasure("u1")
    store.append_events([ev("a")])  # the user comes back: the erasure stays known
    assert store.latest_erasure("u1") == first > 0
    store.delete_user("u2")
    store.delete_user("u1")
    assert store.latest_erasure("u1") > store.latest_erasure("u2") > first
    latest = store.latest_erasure("u1")
    store.close()
    assert EventStore(tmp_path / "s.db").latest_erasure("u1") == latest


def test_events_of_a_user_erased_after_the_senders_erasure_seen_are_refused(
    tmp_path: Path,
) -> None:
    store = EventStore(tmp_path / "s.db")
    store.delete_user("u1")
    seen = store.latest_erasure("u1")
    # The device purged for `seen`: its new events are fine, the other user's too.
    assert store.append_events([ev("a"), ev("b", user="u2")], erasure_seen=seen).erased == ()
    store.delete_user("u1")  # erased again before the device heard of it
    result = store.append_events(
        [ev("c"), ev("d", user="u2"), ev("e"), ev("a", user="u2")], erasure_seen=seen
    )
    assert result.erased == (0, 2)
    assert result.accepted == (1,)
    assert result.duplicates == (3,)
    assert len(result.seqs) == 1
    assert store.events_for_user("u1") == []
    assert [e.event_id for _, e in store.events_for_user("u2")] == ["b", "d"]
    # Without erasure_seen (a microservice), no such check.
    assert store.append_events([ev("f")]).accepted == (0,)


def test_a_store_from_before_numbered_erasures_numbers_its_erased_users(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.db")
    store.delete_user("u1")
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as raw:  # as an older shelfrank left it
        raw.execute("DROP TABLE erasures")
    assert EventStore(tmp_path / "s.db").latest_erasure("u1") > 0


def test_seqs_after_an_erasure_and_the_history_snapshot(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.db")
    store.append_events([ev("a"), ev("b", user="u2"), ev("c")])
    store.delete_user("u1")  # the highest seqs are gone: new ones do not reuse them
    result = store.append_events([ev("d", user="u2"), ev("a"), ev("e", user="u2")])
    assert result.accepted == (0, 2)  # "a" was erased: its replay is a duplicate
    assert result.duplicates == (1,)
    assert result.seqs == tuple(seq for seq, e in store.iter_events() if e.event_id in "de")
    last, history = store.user_history("u2")
    assert last == store.last_seq() == result.seqs[-1]
    assert [(seq, e.event_id) for seq, e in history] == [
        (2, "b"),
        *zip(result.seqs, "de", strict=True),
    ]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    EventStore(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as connection:
        connection.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StorageError, match="schema 99 is newer"):
        EventStore(tmp_path / "s.db")


events = st.lists(
    st.builds(
        ev,
        st.sampled_from([f"e{i}" for i in range(12)]),
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["i1", "i2", "i3"]),
    ),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events, st.randoms(use_true_random=False), st.integers(1, 7))
def test_any_order_and_batching_stores_each_event_id_once(
    tmp_path_factory: pytest.TempPathFactory, batch: list[StoredEvent], rng: object, size: int
) -> None:
    # Same event id always carries the same content in a real client; keep the first.
    canonical = {e.event_id: e for e in reversed(batch)}
    shuffled = [canonical[e.event_id] for e in batch]
    rng.shuffle(shuffled)
    store = EventStore(tmp_path_factory.mktemp("h") / "s.db")
    accepted = 0
    reported: dict[str, int] = {}
    for start in range(0, len(shuffled), size):
        chunk = shuffled[start : start + size]
        result = store.append_events(chunk)
        accepted += len(result.accepted)
        reported |= {
            chunk[i].event_id: seq for i, seq in zip(result.accepted, result.seqs, strict=True)
        }
    stored = {e.event_id for _, e in store.iter_events()}
    assert stored == set(canonical)
    assert accepted == len(canonical)
    # Each accepted event's reported seq is the one it is stored under.
    assert reported == {e.event_id: seq for seq, e in store.iter_events()}
    assert store.counts().events == len(canonical)


def test_concurrent_batches_commit_together_and_each_id_is_accepted_once(tmp_path: Path) -> None:
    """Group commit: many writers with overlapping ids; every id is stored once and
    accepted by exactly one caller, and positions refer to each caller's own batch."""
    import threading

    store = EventStore(tmp_path / "s.db")
    writers, batches_each, size = 6, 20, 50
    results: dict[int, list[tuple[list[StoredEvent], AppendResult]]] = {
        w: [] for w in range(writers)
    }

    def write(writer: int) -> None:
        for b in range(batches_each):
            # Ids overlap between writers (same b) and repeat within a writer (b and b+1).
            batch = [
                ev(f"e{(b + j // 25) * 100 + j % 25}-{j % 3}", user=f"u{writer}")
                for j in range(size)
            ]
            results[writer].append((batch, store.append_events(batch)))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted_ids: list[str] = []
    reported: dict[str, int] = {}
    for runs in results.values():
        for batch, result in runs:
            assert sorted(result.accepted + result.duplicates) == list(range(len(batch)))
            accepted_ids += [batch[i].event_id for i in result.accepted]
            reported |= {
                batch[i].event_id: seq for i, seq in zip(result.accepted, result.seqs, strict=True)
            }
    stored = [e.event_id for _, e in store.iter_events()]
    assert reported == {e.event_id: seq for seq, e in store.iter_events()}
    assert sorted(accepted_ids) == sorted(stored)
    assert len(stored) == len(set(stored))
    assert store.integrity_check() == "ok"


def test_a_failed_group_commit_fails_every_batch_in_it(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.db")
    store.append_events([ev("kept")])
    store._writer.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.item_id = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="refused by test"):
        store.append_events([ev("x1"), ev("x2", item="bad")])
    assert [e.event_id for _, e in store.iter_events()] == ["kept"]
    store.append_events([ev("after")])  # the store keeps working
    assert [e.event_id for _, e in store.iter_events()] == ["kept", "after"]
