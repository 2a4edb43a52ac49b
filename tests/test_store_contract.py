"""The EventStore contract (server/storage.py), the same tests on every backend.

Each test runs on SQLite (the embedded default) and on PostgreSQL (a throwaway cluster
or ``$SHELFRANK_TEST_PG``, see tests/postgres.py). Stores are opened through
``open_store`` from a location: a file for SQLite, a URL for PostgreSQL (a fresh schema of
the test's own database per store, so one test can hold many fresh stores). Tests of one
backend's machinery (SQLite's WAL and user index; PostgreSQL's counter lock, pool and
errors) are at the end, or in tests/test_store.py.
"""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from psycopg import sql

from shelfrank.core.errors import InvalidInputError, StorageError, UnknownIdError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.requests import IncomingEvent, validate_events
from shelfrank.server.storage import (
    AppendResult,
    AuditEntry,
    CatalogueEntry,
    EventStore,
    Impression,
    ImpressionKind,
    LeaseLostError,
    ReplicaSample,
)
from shelfrank.server.store import SQLiteStore
from shelfrank.server.store_common import INT64_MAX, INT64_MIN
from shelfrank.server.store_postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION
from shelfrank.server.store_postgres import PostgresStore
from shelfrank.server.stores import open_store


def tokens_only(
    changes: tuple[int, list[CatalogueEntry]],
) -> tuple[int, list[tuple[str, tuple[str, ...]]]]:
    """A catalogue_changes answer without availability and add times."""
    revision, entries = changes
    return revision, [(entry.item_id, entry.tokens) for entry in entries]


BACKENDS = ["sqlite", "postgresql"]
HYPOTHESIS = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)


def ev(
    event_id: str,
    user: str = "u1",
    item: str = "i1",
    kind: EventType = EventType.VIEW,
    timestamp_ms: int = 1_700_000_000_000,
) -> StoredEvent:
    return StoredEvent(event_id, user, item, kind, timestamp_ms)


SERVED, SHOWN = ImpressionKind.SERVED, ImpressionKind.SHOWN


def imp(
    recommendation_id: str,
    kind: ImpressionKind = SERVED,
    user: str = "u1",
    time_ms: int = 1_700_000_000_000,
    items: tuple[str, ...] = ("i1", "i2"),
    *,
    surface: str = "recommend",
    experiment: str = "",
    variant: str = "",
    model_version: str = "m1",
) -> Impression:
    return Impression(
        recommendation_id=recommendation_id,
        kind=kind,
        user_id=user,
        time_ms=time_ms,
        surface=surface,
        experiment=experiment,
        variant=variant,
        model_version=model_version,
        item_ids=items,
    )


def paged(store: EventStore) -> SQLiteStore | PostgresStore:
    """The store as its backend's class: their streaming reads take a batch size."""
    return cast(SQLiteStore | PostgresStore, store)


class Backend:
    """Fresh store locations of one backend for one test, and the stores opened on them
    (closed when the test ends)."""

    def __init__(self, name: str, new_location: Callable[[], str]) -> None:
        self.name = name
        self._new_location = new_location
        self._open: list[EventStore] = []

    def location(self) -> str:
        """Where a new, empty store can be opened."""
        return self._new_location()

    def open(self, location: str | None = None) -> EventStore:
        store = open_store(location if location is not None else self.location())
        self._open.append(store)
        return store

    @contextmanager
    def fresh(self) -> Iterator[EventStore]:
        """A new store, closed on leaving (hypothesis examples make many)."""
        store = open_store(self.location())
        try:
            yield store
        finally:
            store.close()

    def close_all(self) -> None:
        for store in self._open:
            with suppress(StorageError):  # closed by the test already
                store.close()

    def execute(self, location: str, statement: str) -> None:
        """Run raw SQL on the store at ``location``, as an operator (or a bug) would."""
        if self.name == "sqlite":
            with sqlite3.connect(location) as raw:
                raw.executescript(statement)
            raw.close()
        else:
            with psycopg.connect(location, autocommit=True) as connection:
                connection.execute(statement)  # the tests' own SQL


def _in_schema(url: str, schema: str) -> str:
    """``url`` with ``schema`` first on the search path (libpq's ``options``)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def new_schema(database: str) -> str:
    """The URL of a new, empty schema of ``database`` (a store's tables go there)."""
    schema = f"store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return _in_schema(database, schema)


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    """A PostgreSQL store location of the test's own (a new schema)."""
    return new_schema(postgres_database)


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    if request.param == "sqlite":

        def new_location() -> str:
            return str(tmp_path_factory.mktemp("store") / "events.sqlite3")

    else:
        database = request.getfixturevalue("postgres_database")

        def new_location() -> str:
            return new_schema(database)

    opened = Backend(request.param, new_location)
    yield opened
    opened.close_all()


@pytest.fixture
def store(backend: Backend) -> EventStore:
    return backend.open()


def ids(pairs: list[tuple[int, StoredEvent]]) -> list[str]:
    return [event.event_id for _, event in pairs]


# -- idempotency ------------------------------------------------------------------------------
def test_append_is_idempotent_within_and_across_batches(store: EventStore) -> None:
    first = store.append_events([ev("a"), ev("b"), ev("a")])
    assert first.accepted == (0, 1)
    assert first.duplicates == (2,)
    second = store.append_events([ev("b"), ev("c")])
    assert second.accepted == (1,)
    assert second.duplicates == (0,)
    assert ids(store.events_for_user("u1")) == ["a", "b", "c"]
    assert store.counts().events == 3


def test_the_same_batch_twice_stores_it_once(store: EventStore) -> None:
    batch = [ev(f"e{i}", user=f"u{i % 3}") for i in range(10)]
    first = store.append_events(batch)
    assert first.accepted == tuple(range(10))
    assert first.seqs == tuple(sorted(first.seqs))
    again = store.append_events(batch)
    assert (again.accepted, again.duplicates, again.seqs) == ((), tuple(range(10)), ())
    assert [(seq, e) for seq, e in store.iter_events()] == list(zip(first.seqs, batch, strict=True))


def test_an_empty_batch_stores_nothing(store: EventStore) -> None:
    assert store.append_events([]) == AppendResult(accepted=(), duplicates=())
    assert store.last_seq() == 0
    assert store.counts().events == 0


def test_acknowledged_events_and_dedup_survive_a_restart(backend: Backend) -> None:
    location = backend.location()
    store = backend.open(location)
    store.append_events([ev("a"), ev("b", kind=EventType.PURCHASE)])
    store.upsert_items([("i1", ["category=shoes", "brand=acme"])])
    store.close()
    again = backend.open(location)
    assert again.append_events([ev("a")]).duplicates == (0,)
    assert [e.event_type for _, e in again.events_for_user("u1")] == [
        EventType.VIEW,
        EventType.PURCHASE,
    ]
    assert again.item_features() == {"i1": ("category=shoes", "brand=acme")}
    assert again.integrity_check() == "ok"


def test_every_field_of_an_event_is_kept(store: EventStore) -> None:
    event = StoredEvent(
        "id-1", "user é", "item ü", EventType.SEARCH, 2**53, "s-1", "red shoes", "rec ✓", 2**31 - 1
    )
    result = store.append_events([event])
    assert store.events_for_user("user é") == [(result.seqs[0], event)]
    assert list(store.iter_events()) == [(result.seqs[0], event)]
    assert store.user_history("user é") == (result.seqs[0], [(result.seqs[0], event)])
    assert store.user_view("user é").events == [(result.seqs[0], event)]
    assert list(store.events_between(2**53, 2**53 + 1)) == [event]


# Ids of any characters Track accepts (no C0 control characters), and free text of any kind.
any_id = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=20)
any_text = st.text(st.characters(codec="utf-8"), max_size=20)
incoming = st.builds(
    IncomingEvent,
    event_id=st.uuids().map(str),
    user_id=st.sampled_from(["u1", "user é", "ユーザー"]),
    item_id=any_id,
    event_type=st.integers(1, 6),
    timestamp_ms=st.integers(1, 2**53),
    session_id=st.one_of(st.just(""), any_id),
    query=st.one_of(st.just(""), any_text, st.text(max_size=1024), st.just("a\x00b\tc\n")),
    recommendation_id=st.one_of(st.just(""), any_id),
    position=st.integers(0, 2**31),
)


@settings(HYPOTHESIS, max_examples=40)
@given(st.lists(incoming, min_size=4, max_size=12))
def test_whatever_track_accepts_is_stored_and_read_back_as_it_was(
    backend: Backend, batch: list[IncomingEvent]
) -> None:
    """Text of any kind the validation lets through (accents, CJK, emoji, controls in a
    query, ...) is stored by both stores, and every read gives the same events back."""
    valid, _ = validate_events(batch, 2**53)
    hypothesis_event(f"events valid: {len(valid) // 4 * 4}+")
    with backend.fresh() as store:
        result = store.append_events(valid)
        assert len(result.accepted) == len(valid)
        stored = [event for _, event in store.iter_events()]
        assert stored == valid
        for user in {event.user_id for event in valid}:
            assert [e for _, e in store.events_for_user(user)] == [
                e for e in valid if e.user_id == user
            ]


def test_a_large_batch_is_stored_in_order(store: EventStore) -> None:
    store.append_events([ev("e5"), ev("e300")])
    batch = [ev(f"e{i}", user=f"u{i % 7}") for i in range(1100)]
    result = store.append_events(batch)
    assert result.duplicates == (5, 300)
    assert len(result.accepted) == 1098
    stored = [(seq, e.event_id) for seq, e in store.iter_events()][2:]
    assert stored == [
        (seq, batch[i].event_id) for i, seq in zip(result.accepted, result.seqs, strict=True)
    ]
    assert [seq for seq, _ in stored] == sorted(seq for seq, _ in stored)


# -- features ---------------------------------------------------------------------------------
def test_upsert_replaces_features(store: EventStore) -> None:
    assert store.upsert_users([("u1", ["segment=a"]), ("u2", [])]) == 2
    store.upsert_users([("u1", ["segment=b"])])
    assert store.user_features() == {"u1": ("segment=b",), "u2": ()}


def test_the_last_copy_of_an_id_in_one_upsert_wins(store: EventStore) -> None:
    assert store.upsert_items([("i1", ["a"]), ("i2", ["x", "y"]), ("i1", ["b", "c"])]) == 3
    assert store.item_features() == {"i1": ("b", "c"), "i2": ("x", "y")}
    assert store.counts().items == 2
    assert store.upsert_items([]) == 0


def test_item_features_stream_in_byte_order(store: EventStore) -> None:
    names = ["b", "B", "a", "é", "a1", "Z", "", "aa"]
    store.upsert_items([(name, [f"t={name}"]) for name in names])
    streamed = list(store.iter_item_features())
    assert [name for name, _ in streamed] == sorted(names, key=lambda n: n.encode())
    assert dict(streamed) == store.item_features() == {n: (f"t={n}",) for n in names}
    assert store.user_features() == {}


# -- erasure ----------------------------------------------------------------------------------
def test_delete_user_erases_rows_and_replays_do_not_resurrect(store: EventStore) -> None:
    store.append_events([ev("a"), ev("b"), ev("c", user="u2")])
    store.upsert_users([("u1", ["segment=a"])])
    assert store.delete_user("u1") == (True, 2)
    assert store.delete_user("u1") == (False, 0)
    assert store.events_for_user("u1") == []
    assert "u1" not in store.user_features()
    replay = store.append_events([ev("a"), ev("b"), ev("d")])
    assert replay.duplicates == (0, 1)
    assert ids(store.events_for_user("u1")) == ["d"]
    assert ids(store.events_for_user("u2")) == ["c"]


def test_deleting_a_profile_without_events_counts_as_existing(store: EventStore) -> None:
    store.upsert_users([("u1", ["segment=a"])])
    assert store.delete_user("u1") == (True, 0)
    assert store.delete_user("nobody") == (False, 0)
    assert store.latest_erasure("nobody") > store.latest_erasure("u1") > 0


def test_erasures_are_numbered_per_user_and_survive_a_reopen(backend: Backend) -> None:
    location = backend.location()
    store = backend.open(location)
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
    assert backend.open(location).latest_erasure("u1") == latest


def test_a_user_who_comes_back_is_no_longer_erased(store: EventStore) -> None:
    store.append_events([ev("a"), ev("b", user="u2")])
    assert store.erasure_state("u1") == (0, False)
    assert not store.was_erased("u1")
    store.delete_user("u1")
    erasure = store.latest_erasure("u1")
    assert store.erasure_state("u1") == (erasure, True)
    assert store.was_erased("u1")
    assert store.erased_among(["u1", "u2", "u3", "u1"]) == {"u1"}
    store.append_events([ev("c")])  # back, with a new event
    assert store.erasure_state("u1") == (erasure, False)
    assert not store.was_erased("u1")
    assert store.erased_among(["u1", "u2"]) == set()
    assert store.erased_among([]) == set()
    assert ids(store.events_for_user("u1")) == ["c"]


def test_events_of_a_user_erased_after_the_senders_erasure_seen_are_refused(
    store: EventStore,
) -> None:
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
    assert ids(store.events_for_user("u2")) == ["b", "d"]
    # A device that purged for the latest erasure sends again: accepted.
    latest = store.latest_erasure("u1")
    assert store.append_events([ev("c")], erasure_seen=latest).accepted == (0,)
    # Without erasure_seen (a microservice), no such check.
    assert store.append_events([ev("f")]).accepted == (0,)


def test_a_refused_copy_does_not_hide_a_later_copy_of_the_same_id(store: EventStore) -> None:
    store.delete_user("u1")
    result = store.append_events([ev("x", user="u1"), ev("x", user="u2")], erasure_seen=0)
    assert (result.erased, result.accepted, result.duplicates) == ((0,), (1,), ())
    assert ids(store.events_for_user("u2")) == ["x"]


# -- ordering ---------------------------------------------------------------------------------
def test_seqs_after_an_erasure_and_the_history_snapshot(store: EventStore) -> None:
    store.append_events([ev("a"), ev("b", user="u2"), ev("c")])
    store.delete_user("u1")  # the highest seqs are gone: new ones do not reuse them
    result = store.append_events([ev("d", user="u2"), ev("a"), ev("e", user="u2")])
    assert result.accepted == (0, 2)  # "a" was erased: its replay is a duplicate
    assert result.duplicates == (1,)
    assert result.seqs == tuple(seq for seq, e in store.iter_events() if e.event_id in "de")
    assert min(result.seqs) > 3
    last, history = store.user_history("u2")
    assert last == store.last_seq() == result.seqs[-1]
    assert [(seq, e.event_id) for seq, e in history] == [
        (2, "b"),
        *zip(result.seqs, "de", strict=True),
    ]


def test_the_user_view_reads_what_a_request_needs_from_one_snapshot(store: EventStore) -> None:
    empty = store.user_view("u1")
    assert (empty.last_seq, empty.events, empty.latest_erasure, empty.profile) == (0, [], 0, ())
    assert empty.catalogue_revision == 0
    first = store.append_events([ev("a"), ev("b", user="u2"), ev("c", kind=EventType.PURCHASE)])
    store.upsert_users([("u1", ["segment=new", "country=de"])])
    view = store.user_view("u1")
    assert view.last_seq == store.last_seq() == first.seqs[-1]
    assert view.events == store.events_for_user("u1")
    assert view.profile == ("segment=new", "country=de")
    later = store.append_events([ev("d"), ev("e", user="u2")])
    # Only what came after the seq the caller already has.
    after = store.user_view("u1", after_seq=view.last_seq)
    assert [(seq, e.event_id) for seq, e in after.events] == [(later.seqs[0], "d")]
    assert after.last_seq == later.seqs[-1]
    assert store.user_view("u1", after_seq=after.last_seq).events == []
    store.delete_user("u1")
    erased = store.user_view("u1")
    assert (erased.events, erased.profile) == ([], ())
    assert erased.latest_erasure == store.latest_erasure("u1") == store.last_erasure() > 0
    assert store.user_view("u2").latest_erasure == 0


def test_catalogue_revisions_name_every_change_in_commit_order(backend: Backend) -> None:
    location = backend.location()
    writer, reader = backend.open(location), backend.open(location)  # two processes' view
    assert tokens_only(writer.catalogue_changes()) == (0, [])
    assert writer.upsert_items([]) == 0
    assert tokens_only(writer.catalogue_changes()) == (0, [])  # nothing given: no new revision
    writer.upsert_items([("b", ["colour=red"]), ("a", ["colour=blue"])])
    first, items = tokens_only(reader.catalogue_changes())
    assert first == 1
    assert items == [("a", ("colour=blue",)), ("b", ("colour=red",))]
    assert reader.user_view("anyone").catalogue_revision == reader.catalogue_revision() == first
    writer.upsert_items([("c", []), ("a", ["colour=green"])])
    second, changed = tokens_only(reader.catalogue_changes(first))
    assert second == 2
    assert changed == [("a", ("colour=green",)), ("c", ())]
    assert tokens_only(reader.catalogue_changes(second)) == (second, [])
    everything = tokens_only(reader.catalogue_changes())[1]
    assert everything == [("b", ("colour=red",)), ("a", ("colour=green",)), ("c", ())]
    assert sorted(everything) == sorted(reader.item_features().items())


def test_items_keep_one_integer_key_for_life(backend: Backend) -> None:
    location = backend.location()
    writer, reader = backend.open(location), backend.open(location)
    writer.upsert_items([("b", ["colour=red"]), ("a", [])])
    keys = {e.item_id: e.key for e in reader.catalogue_changes()[1]}
    assert len(set(keys.values())) == 2
    assert min(keys.values()) > 0
    writer.upsert_items([("a", ["colour=blue"]), ("c", []), ("b", [])])  # updates and a new one
    writer.set_availability(["a"], False)
    again = {e.item_id: e.key for e in reader.catalogue_changes()[1]}
    assert {item: again[item] for item in keys} == keys  # an update or a flip keeps the key
    assert again["c"] not in keys.values()
    assert again["c"] > 0
    flipped = reader.catalogue_changes(reader.catalogue_revision() - 1)[1]
    assert [(e.item_id, e.key) for e in flipped] == [("a", keys["a"])]


def test_availability_flips_are_catalogue_changes_without_touching_tokens(
    backend: Backend,
) -> None:
    location = backend.location()
    writer, reader = backend.open(location), backend.open(location)
    writer.upsert_items([("a", ["brand=x"]), ("b", ["brand=y"]), ("c", [])])
    revision, entries = reader.catalogue_changes()
    assert all(entry.available for entry in entries)
    assert all(entry.added_ms > 0 for entry in entries)
    added = {entry.item_id: entry.added_ms for entry in entries}
    result = writer.set_availability(["b", "nope", "c", "b"], False)
    assert (result.changed, result.unknown_item_ids) == (2, ("nope",))
    flipped, changed = reader.catalogue_changes(revision)
    assert flipped == revision + 1
    assert [(e.item_id, e.tokens, e.available) for e in changed] == [
        ("b", ("brand=y",), False),
        ("c", (), False),
    ]
    again = writer.set_availability(["b"], False)  # nothing changes: no new revision
    assert (again.changed, again.unknown_item_ids) == (0, ())
    assert reader.catalogue_revision() == flipped
    writer.upsert_items([("b", ["brand=z"])])  # re-tagging keeps it unavailable
    _, latest = reader.catalogue_changes(flipped)
    assert [(e.item_id, e.tokens, e.available, e.added_ms) for e in latest] == [
        ("b", ("brand=z",), False, added["b"])
    ]
    assert writer.set_availability(["b"], True).changed == 1
    assert {e.item_id: e.available for e in reader.catalogue_changes()[1]} == {
        "a": True,
        "b": True,
        "c": False,
    }


def test_erasures_are_counted_across_processes(backend: Backend) -> None:
    location = backend.location()
    writer, reader = backend.open(location), backend.open(location)
    assert reader.last_erasure() == 0
    writer.append_events([ev("a"), ev("b", user="u2")])
    reader.user_view("u1")  # a view cached before the erasure does not hide it
    writer.delete_user("u1")
    assert reader.last_erasure() == writer.latest_erasure("u1") > 0
    assert reader.user_view("u1").events == []
    writer.delete_user("u2")
    assert reader.last_erasure() == writer.latest_erasure("u2") > writer.latest_erasure("u1")


# -- impressions and attribution --------------------------------------------------------------
def test_impressions_are_kept_whole_across_a_reopen(backend: Backend) -> None:
    location = backend.location()
    store = backend.open(location)
    stored = [
        imp(
            "rec é 1",
            user="用户 ü",
            time_ms=10,
            items=("item ü", "商品", "🙂", "x" * 300),
            surface="recommend",
            experiment="ranker ✓",
            variant="b",
            model_version="v-ß.c7",
        ),
        imp("rec é 1", SHOWN, user="用户 ü", time_ms=11, items=("商品",), surface="device"),
        imp("anonymous", user="", time_ms=12, surface="similar", model_version=""),
        imp("nothing shown", time_ms=13, items=()),
    ]
    assert store.record_impressions(stored) == 4
    store.close()
    again = backend.open(location)
    assert list(again.impressions_between(0, 100)) == stored
    assert again.integrity_check() == "ok"


def test_a_repeated_impression_is_ignored_and_the_first_stays(store: EventStore) -> None:
    first = imp("r1", items=("a", "b"))
    assert store.record_impressions([first, imp("r1", items=("c",)), imp("r2")]) == 2
    # The same id again, stored or repeated in the batch; the other kind is another one.
    again = [imp("r1", items=("d",)), imp("r1", SHOWN, items=("a",)), imp("r1", SHOWN), imp("r3")]
    assert store.record_impressions(again) == 2
    assert store.record_impressions(again) == 0
    assert [
        (i.recommendation_id, i.kind, i.item_ids) for i in store.impressions_between(0, 2**62)
    ] == [
        ("r1", SERVED, ("a", "b")),
        ("r1", SHOWN, ("a",)),
        ("r2", SERVED, ("i1", "i2")),
        ("r3", SERVED, ("i1", "i2")),
    ]


def test_nothing_to_record_or_read_is_no_error(store: EventStore) -> None:
    assert store.record_impressions([]) == 0
    assert list(store.impressions_between(0, 2**62)) == []
    assert list(store.events_between(0, 2**62)) == []
    store.record_impressions([imp("r1", time_ms=5)])
    store.append_events([ev("a", timestamp_ms=5)])
    for from_ms, to_ms in ((5, 5), (6, 5), (0, 5), (6, 2**62)):
        assert list(store.impressions_between(from_ms, to_ms)) == []
        assert list(store.events_between(from_ms, to_ms)) == []


def test_impressions_between_is_half_open_and_ordered_by_time_id_and_kind(
    store: EventStore,
) -> None:
    # Ids in byte order: "B" < "a" < "a1" < "é"; served before shown.
    wanted = [
        imp("m", time_ms=100),
        imp("B", SHOWN, time_ms=101),
        imp("a", SERVED, time_ms=101),
        imp("a", SHOWN, time_ms=101),
        imp("a1", time_ms=101),
        imp("é", time_ms=101),
        imp("z", time_ms=199),
    ]
    outside = [imp("early", time_ms=99), imp("at the end", time_ms=200)]
    store.record_impressions([*reversed(wanted[4:]), outside[1], *wanted[:4], outside[0]])
    assert list(store.impressions_between(100, 200)) == wanted
    for batch in (1, 2, 3):
        assert list(paged(store).impressions_between(100, 200, batch)) == wanted
    assert list(store.impressions_between(101, 102)) == wanted[1:6]
    assert list(store.impressions_between(99, 201)) == [outside[0], *wanted, outside[1]]


def test_events_between_is_half_open_and_ordered_by_time_and_id(store: EventStore) -> None:
    wanted = [
        ev("m", timestamp_ms=100),
        ev("B", user="u2", timestamp_ms=101),
        ev("a", timestamp_ms=101),
        ev("é", timestamp_ms=101),
        ev("0", timestamp_ms=199),
    ]
    outside = [ev("early", timestamp_ms=99), ev("at the end", timestamp_ms=200)]
    store.append_events([wanted[4], outside[1], wanted[3], *wanted[:3], outside[0]])
    assert list(store.events_between(100, 200)) == wanted
    for batch in (1, 2, 4):
        assert list(paged(store).events_between(100, 200, batch)) == wanted
    assert list(store.events_between(101, 102)) == wanted[1:4]
    assert list(store.events_between(99, 201)) == [outside[0], *wanted, outside[1]]


def test_report_ranges_beyond_64_bits_mean_the_ends_of_the_range(store: EventStore) -> None:
    """A report "until the last possible time plus a window" is the whole range, not an
    overflow in the driver (INTERNAL over gRPC)."""
    events = [ev("a", timestamp_ms=5), ev("late", timestamp_ms=INT64_MAX - 1)]
    impressions = [imp("r1", time_ms=5), imp("r2", time_ms=INT64_MAX - 1)]
    store.append_events(events)
    store.record_impressions(impressions)
    huge = 2**63 + 10**9
    assert list(store.events_between(0, huge)) == events
    assert list(store.impressions_between(0, huge)) == impressions
    assert list(store.events_between(-huge, huge)) == events
    assert list(store.impressions_between(-huge, huge)) == impressions
    assert list(store.events_between(6, huge)) == events[1:]
    assert list(store.impressions_between(6, huge)) == impressions[1:]
    for from_ms, to_ms in ((huge, huge + 1), (-huge - 1, -huge), (-huge, 5)):
        assert list(store.events_between(from_ms, to_ms)) == []
        assert list(store.impressions_between(from_ms, to_ms)) == []


def test_the_response_an_event_answers_is_kept_on_every_read(store: EventStore) -> None:
    clicked = ev("a", timestamp_ms=10)._replace(recommendation_id="r1", position=3)
    unattributed = ev("b", timestamp_ms=11)
    other = ev("c", user="u2", timestamp_ms=12)._replace(recommendation_id="r2", position=1)
    seqs = store.append_events([clicked, unattributed, other]).seqs
    mine = [(seqs[0], clicked), (seqs[1], unattributed)]
    assert list(store.iter_events()) == [*mine, (seqs[2], other)]
    assert store.events_for_user("u1") == mine
    assert store.user_history("u1") == (seqs[2], mine)
    assert store.user_view("u1").events == mine
    assert store.user_view("u1", after_seq=seqs[0]).events == mine[1:]
    assert list(store.events_between(0, 100)) == [clicked, unattributed, other]


def test_an_erasure_takes_the_users_impressions_and_no_one_elses(store: EventStore) -> None:
    store.record_impressions(
        [
            imp("r1", user="u1"),
            imp("r1", SHOWN, user="u1"),
            imp("r2", user="u2"),
            imp("r3", user=""),
            imp("r4", user="u1 "),  # another user
        ]
    )
    store.append_events([ev("a", user="u2")])
    # Impressions alone are data about the user: the user existed.
    assert store.delete_user("u1") == (True, 0)
    assert [i.recommendation_id for i in store.impressions_between(0, 2**62)] == ["r2", "r3", "r4"]
    assert store.delete_user("u1") == (False, 0)
    store.record_impressions([imp("r5", user="u2")])
    assert store.delete_user("u2") == (True, 1)
    assert [i.user_id for i in store.impressions_between(0, 2**62)] == ["", "u1 "]


def test_an_impression_made_before_an_erasure_is_never_stored_after_it(store: EventStore) -> None:
    """A buffered or re-sent impression carries the erasure its sender had seen: once the
    user is erased after it, it is dropped, as Track drops such events."""
    from dataclasses import replace

    store.record_impressions([imp("r1", user="u1")])
    seen = store.latest_erasure("u1")
    store.delete_user("u1")
    late = [
        replace(imp("r2", user="u1"), erasure_seen=seen),
        replace(imp("r3", SHOWN, user="u1"), erasure_seen=seen),
        replace(imp("r4", user="u2"), erasure_seen=seen),  # another user: kept
    ]
    assert store.record_impressions(late) == 1
    now = store.latest_erasure("u1")
    assert now > seen
    fresh = [
        replace(imp("r5", user="u1"), erasure_seen=now),  # made after the erasure: kept
        imp("r6", user="u1"),  # no check asked for
    ]
    assert store.record_impressions(fresh) == 2
    assert [i.recommendation_id for i in store.impressions_between(0, 2**62)] == [
        "r4",
        "r5",
        "r6",
    ]


def test_erased_impressions_are_dropped_before_repeats_are_looked_for(store: EventStore) -> None:
    """A dropped impression hides no later copy of its key, and both backends count the
    same impressions as new."""
    store.record_impressions([imp("stored", user="u2"), imp("x", user="gone")])
    seen = store.latest_erasure("gone")
    store.delete_user("gone")
    batch = [
        replace(imp("r1", user="gone"), erasure_seen=seen),  # dropped
        imp("r1", user="u2", items=("kept",)),  # new: the dropped copy does not hide it
        imp("r2", user="u2"),
        imp("r2", user="u2", items=("repeat",)),  # a repeat in the batch
        replace(imp("r3", user="gone"), erasure_seen=seen),  # dropped
        imp("stored", user="u2", items=("repeat",)),  # stored before
        replace(imp("r3", SHOWN, user="u2"), erasure_seen=seen),  # another user: new
    ]
    assert store.record_impressions(batch) == 3
    assert [
        (i.recommendation_id, i.kind, i.user_id, i.item_ids)
        for i in store.impressions_between(0, 2**62)
    ] == [
        ("r1", SERVED, "u2", ("kept",)),
        ("r2", SERVED, "u2", ("i1", "i2")),
        ("r3", SHOWN, "u2", ("i1", "i2")),
        ("stored", SERVED, "u2", ("i1", "i2")),
    ]


def test_a_shown_report_naming_no_user_takes_the_served_users(store: EventStore) -> None:
    """A caller reports what it showed without a user (the client's default): the stored
    SERVED impression of the same id (or the batch's) names the user, so the user's
    erasure check and erasure apply to the report."""
    store.record_impressions([imp("r1", user="u1"), imp("anon", user="")])
    assert (
        store.record_impressions(
            [
                imp("r1", SHOWN, user="", items=("i2",)),
                imp("r2", SHOWN, user=""),  # no SERVED one: stays unattributed
                imp("anon", SHOWN, user=""),  # its SERVED one names no user
                imp("r3", SHOWN, user=""),  # its SERVED one is in the batch
                imp("r3", user="u3"),
            ]
        )
        == 5
    )
    assert [
        (i.recommendation_id, i.kind, i.user_id) for i in store.impressions_between(0, 2**62)
    ] == [
        ("anon", SERVED, ""),
        ("anon", SHOWN, ""),
        ("r1", SERVED, "u1"),
        ("r1", SHOWN, "u1"),
        ("r2", SHOWN, ""),
        ("r3", SERVED, "u3"),
        ("r3", SHOWN, "u3"),
    ]
    # A report made before the user's erasure is dropped after it, also naming no user.
    seen = store.latest_erasure("u4")
    store.record_impressions([imp("r4", user="u4")])
    store.delete_user("u4")
    store.record_impressions([imp("r5", user="u4")])  # the user came back (no check asked)
    late = replace(imp("r5", SHOWN, user=""), erasure_seen=seen)
    assert store.record_impressions([late]) == 0
    assert [i.recommendation_id for i in store.impressions_between(0, 2**62)] == [
        "anon",
        "anon",
        "r1",
        "r1",
        "r2",
        "r3",
        "r3",
        "r5",
    ]


def test_an_erasure_takes_what_was_shown_of_the_users_responses(store: EventStore) -> None:
    # Stored naming no user before its SERVED one was (the server records those in the
    # background), or naming someone else: the erasure takes them by recommendation id.
    store.record_impressions(
        [imp("r1", SHOWN, user=""), imp("r2", SHOWN, user="u2"), imp("r3", SHOWN, user="")]
    )
    store.record_impressions([imp("r1", user="u1"), imp("r2", user="u1"), imp("r3", user="u3")])
    store.record_impressions([imp("r4", user="u1"), imp("r4", SHOWN, user="")])
    assert store.delete_user("u1") == (True, 0)
    assert [(i.recommendation_id, i.kind) for i in store.impressions_between(0, 2**62)] == [
        ("r3", SERVED),
        ("r3", SHOWN),
    ]
    # Nothing of u1 left: the erasure finds nothing more.
    assert store.delete_user("u1") == (False, 0)


def test_impressions_are_read_back_by_their_ids_whatever_their_times(store: EventStore) -> None:
    # What a range report adds to a read by time: the other half of a response.
    written = [
        imp("r1", time_ms=1_000, experiment="home", variant="a"),
        imp("r1", SHOWN, time_ms=9_000_000_000, items=("i2",), surface="device"),
        imp("r2", user="u2", time_ms=5_000, model_version="m2"),
        imp("r3", SHOWN, user="", time_ms=7_000),
    ]
    store.record_impressions(written)
    by_key = {(i.recommendation_id, i.kind): i for i in written}
    found = store.impressions_of(["r1", "r3", "nothing", "r1"])
    assert found == [by_key["r1", SERVED], by_key["r1", SHOWN], by_key["r3", SHOWN]]
    assert store.impressions_of([]) == []


def test_what_was_shown_of_an_erased_response_is_not_stored_after_the_erasure(
    store: EventStore,
) -> None:
    # A report naming no user (the callers' default) takes the user of its SERVED record;
    # after the erasure there is none, so only the response's id can tell it was the
    # erased user's: with or without the erasure the sender had seen, it is not stored.
    from dataclasses import replace

    store.record_impressions([imp("r1", user="u1"), imp("r2", user="u2")])
    seen = store.latest_erasure("u1")
    assert store.delete_user("u1") == (True, 0)
    late = [
        replace(imp("r1", SHOWN, user=""), erasure_seen=seen),
        imp("r1", SHOWN, user=""),
        imp("r2", SHOWN, user=""),  # another user's response: kept
    ]
    assert store.record_impressions(late) == 1
    assert [(i.recommendation_id, i.kind) for i in store.impressions_between(0, 2**62)] == [
        ("r2", SERVED),
        ("r2", SHOWN),
    ]


# -- per-item daily counters (item_days) -------------------------------------------------------
DAY = 86_400_000
DAY0 = 19_000 * DAY  # a UTC day's first ms


def per_day(store: EventStore, item: str, days: int = 3) -> list[tuple[int, int]]:
    """(shown, clicked) of ``item`` on each of the days from DAY0 on, from the sums
    ``item_feedback`` answers."""
    sums = [store.item_feedback(item, DAY0 + day * DAY) for day in range(days + 1)]
    return [
        (sums[day][0] - sums[day + 1][0], sums[day][1] - sums[day + 1][1]) for day in range(days)
    ]


def test_each_recommendation_counts_once_for_each_of_its_items_on_its_day(
    store: EventStore,
) -> None:
    first = [
        imp("r1", time_ms=DAY0 + 5, items=("a", "b")),
        imp("r2", time_ms=DAY0 + DAY - 1, items=("a", "c", "a")),  # "a" twice: once
        imp("r3", time_ms=DAY0 + DAY, items=("a",)),  # the next day
    ]
    assert store.record_impressions(first) == 3
    assert per_day(store, "a") == [(2, 0), (1, 0), (0, 0)]
    assert per_day(store, "b") == per_day(store, "c") == [(1, 0), (0, 0), (0, 0)]
    # Repeats (stored, or earlier in the batch) count nothing.
    assert store.record_impressions([*first, imp("r4", time_ms=DAY0, items=("b",))]) == 1
    assert store.record_impressions([imp("r4", time_ms=DAY0 + DAY, items=("a",))]) == 0
    assert per_day(store, "a") == [(2, 0), (1, 0), (0, 0)]
    assert per_day(store, "b") == [(2, 0), (0, 0), (0, 0)]
    # One record per recommendation id counts: the SERVED one (what a SHOWN one narrows it
    # to does not change the counts), else the SHOWN one (a list ranked on a device).
    assert (
        store.record_impressions(
            [
                imp("r5", SHOWN, time_ms=DAY0, items=("b",)),  # its SERVED one is in the batch
                imp("r5", time_ms=DAY0, items=("a", "b")),
                imp("r1", SHOWN, time_ms=DAY0 + 9, items=("a",)),  # its SERVED one is stored
                imp("d1", SHOWN, user="", time_ms=DAY0 + 2 * DAY, items=("d",)),  # device
            ]
        )
        == 4
    )
    assert per_day(store, "a") == [(3, 0), (1, 0), (0, 0)]
    assert per_day(store, "b") == [(3, 0), (0, 0), (0, 0)]
    assert per_day(store, "d") == [(0, 0), (0, 0), (1, 0)]
    # A SHOWN record stored before its SERVED one counted, until the SERVED one came: then
    # the SERVED one's list counts instead, on its day (the order they arrive in does not
    # matter).
    store.record_impressions([imp("r6", SHOWN, user="", time_ms=DAY0 + DAY, items=("e",))])
    assert per_day(store, "e") == [(0, 0), (1, 0), (0, 0)]
    store.record_impressions([imp("r6", time_ms=DAY0 + 3, items=("e", "f"))])
    assert per_day(store, "e") == per_day(store, "f") == [(1, 0), (0, 0), (0, 0)]
    # An impression the erasure check drops is not counted.
    seen = store.latest_erasure("gone")
    store.record_impressions([imp("x", user="gone", time_ms=DAY0, items=("g",))])
    store.delete_user("gone")
    late = [replace(imp("r7", user="gone", time_ms=DAY0, items=("g", "h")), erasure_seen=seen)]
    assert store.record_impressions(late) == 0
    assert per_day(store, "h") == [(0, 0), (0, 0), (0, 0)]
    # The erasure kept the count of its impression: an anonymous aggregate.
    assert per_day(store, "g") == [(1, 0), (0, 0), (0, 0)]
    # since_ms is cut to its day: any ms of a day counts that whole day.
    assert store.item_feedback("a", DAY0 + DAY - 1) == (4, 0)
    assert store.item_feedback("a", DAY0 + DAY) == store.item_feedback("a", DAY0 + 2 * DAY - 1)
    assert store.item_feedback("a", DAY0 + DAY) == (1, 0)
    assert store.item_feedback("a", -(2**70)) == (4, 0)
    assert store.item_feedback("a", 2**70) == (0, 0)
    assert store.item_feedback("unknown", 0) == (0, 0)
    assert store.item_feedback("nul \x00", 0) == (0, 0)  # could never be stored


def test_views_answering_a_stored_impression_of_their_item_and_user_count_as_clicks(
    store: EventStore,
) -> None:
    store.record_impressions(
        [
            imp("r1", user="u1", time_ms=DAY0, items=("a", "b")),
            imp("anon", user="", time_ms=DAY0, items=("a",)),  # anonymous: any user's
            imp("dev", SHOWN, user="u2", time_ms=DAY0, items=("c",)),  # SHOWN only
        ]
    )
    shown = {item: per_day(store, item) for item in ("a", "b", "c")}

    def click(event_id: str, user: str, item: str, rid: str, day: int = 0) -> StoredEvent:
        return ev(event_id, user, item, timestamp_ms=DAY0 + day * DAY + 7)._replace(
            recommendation_id=rid, position=1
        )

    counted = [
        click("e1", "u1", "a", "r1"),
        click("e2", "u9", "a", "anon", day=1),  # the click's day, not the impression's
        click("e3", "u2", "c", "dev"),
        click("e4", "u1", "b", "r1", day=1),
    ]
    not_counted = [
        click("e1", "u1", "a", "r1"),  # a duplicate in the batch
        click("x1", "u2", "a", "r1"),  # another user's response
        click("x2", "u1", "c", "r1"),  # an item not in the response
        click("x3", "u1", "a", "unknown"),  # no such response
        click("x4", "u1", "a", "late"),  # its impression is stored later
        click("x5", "u1", "a", "r1")._replace(event_type=EventType.PURCHASE),  # not a view
        ev("x6", "u1", "a", timestamp_ms=DAY0),  # no recommendation id (window rule)
    ]
    result = store.append_events(counted + not_counted)
    assert len(result.accepted) == len(counted) + len(not_counted) - 1
    assert store.append_events([click("e1", "u1", "a", "r1")]).duplicates == (0,)  # stored
    store.record_impressions([imp("late", user="u1", time_ms=DAY0, items=("z",))])
    # Refused by the erasure check: not stored, not counted.
    seen = store.latest_erasure("u3")
    store.append_events([ev("seed", "u3")])
    store.delete_user("u3")
    refused = store.append_events([click("x7", "u3", "a", "anon")], erasure_seen=seen)
    assert refused.erased == (0,)

    def clicks(item: str) -> list[int]:
        return [c for _, c in per_day(store, item)]

    assert clicks("a") == [1, 1, 0]
    assert clicks("b") == [0, 1, 0]
    assert clicks("c") == [1, 0, 0]
    assert clicks("z") == [0, 0, 0]
    assert [s for s, _ in per_day(store, "a")] == [s for s, _ in shown["a"]]  # clicks only
    # The clicks are anonymous aggregates: the erasure of the users keeps them.
    store.delete_user("u1")
    store.delete_user("u9")
    assert clicks("a") == [1, 1, 0]
    assert clicks("b") == [0, 1, 0]
    assert store.item_feedback("a", DAY0) == (2, 2)


def fill_for_counting(store: EventStore) -> None:
    """Impressions and clicks that an upgraded store counts from its stored rows (the
    migration tests of both backends)."""

    def click(event_id: str, user: str, item: str, rid: str, day: int) -> StoredEvent:
        return ev(event_id, user, item, timestamp_ms=DAY0 + day * DAY + 1)._replace(
            recommendation_id=rid
        )

    store.append_events([click("early", "u1", "a", "r1", 0)])  # before its impression
    store.record_impressions(
        [
            imp("r1", user="u1", time_ms=DAY0, items=("a", "b")),
            imp("r1", SHOWN, user="u1", time_ms=DAY0, items=("a",)),  # r1 counts once
            imp("d1", SHOWN, user="u2", time_ms=DAY0 + DAY, items=("c",)),  # SHOWN only
            imp("r2", user="", time_ms=DAY0 + DAY, items=("a", "a")),
        ]
    )
    store.append_events(
        [
            click("c1", "u1", "a", "r1", 0),
            click("c2", "u5", "a", "r2", 1),  # an anonymous response: any user's
            click("c3", "u2", "b", "r1", 0),  # another user's response: not counted
        ]
    )


# What fill_for_counting leaves counted as it is written: the early click is not...
COUNTED_AT_WRITE = {"a": [(1, 1), (1, 1)], "b": [(1, 0), (0, 0)], "c": [(0, 0), (1, 0)]}
# ... and what an upgrade counts from the stored rows: the early click too.
COUNTED_FROM_STORED = {**COUNTED_AT_WRITE, "a": [(1, 2), (1, 1)]}


def counted(store: EventStore) -> dict[str, list[tuple[int, int]]]:
    return {item: per_day(store, item, days=2) for item in ("a", "b", "c")}


item_day_batches = st.lists(
    st.lists(
        st.builds(
            imp,
            st.sampled_from(["r1", "r2", "r3"]),
            st.sampled_from([SERVED, SHOWN]),
            st.sampled_from(["u1", ""]),
            st.sampled_from([DAY0, DAY0 + DAY - 1, DAY0 + DAY, DAY0 + 2 * DAY + 5]),
            st.lists(st.sampled_from(["a", "b", "c"]), max_size=4).map(tuple),
        ),
        max_size=6,
    ),
    max_size=5,
)


@settings(HYPOTHESIS, max_examples=25)
@given(item_day_batches)
def test_the_shown_counts_follow_the_stored_records_whatever_their_order(
    backend: Backend, batches: list[list[Impression]]
) -> None:
    """Whatever the batches and the order records arrive in, each recommendation id counts
    its SERVED record's items (else its SHOWN one's), once each, on that record's day."""
    with backend.fresh() as store:
        for batch in batches:
            store.record_impressions(batch)
        counted: dict[str, Impression] = {}
        for record in store.impressions_between(0, 2**62):
            if record.kind is SERVED or record.recommendation_id not in counted:
                counted[record.recommendation_id] = record
        for item in ("a", "b", "c"):
            expected = [
                (
                    sum(
                        item in i.item_ids and i.time_ms // DAY == DAY0 // DAY + day
                        for i in counted.values()
                    ),
                    0,
                )
                for day in range(3)
            ]
            assert per_day(store, item) == expected


# -- model registry and leases ----------------------------------------------------------------
def test_model_versions_are_stored_whole_and_the_pointer_moves(backend: Backend) -> None:
    location = backend.location()
    trainer, replica = backend.open(location), backend.open(location)
    assert replica.current_model() is None
    big = bytes(range(256)) * (5 * 2**20 // 256 + 7)  # more than one chunk
    files = [("manifest.json", b'{"v": 1}'), ("arrays.npz", big), ("empty.bin", b"")]
    assert trainer.save_model("m1", files)
    assert not trainer.save_model("m1", [("other", b"x")])  # stored before: left as it is
    assert replica.has_model("m1")
    assert not replica.has_model("m2")
    assert sorted(replica.model_files("m1")) == sorted(files)
    with pytest.raises(StorageError, match="'m2' is not in the store"):
        replica.model_files("m2")
    with pytest.raises(StorageError, match="'m2' is not in the store"):
        trainer.publish_model("m2")
    first = trainer.publish_model("m1")
    assert replica.current_model() == first
    trainer.save_model("m2", [("manifest.json", b"{}")])
    second = trainer.publish_model("m2")
    assert second.published > first.published
    assert replica.current_model() == second
    for n in range(3, 6):
        trainer.save_model(f"m{n}", [("manifest.json", b"{}")])
    # The current one (m2) stays whatever its age, and a protected one (pinned by an
    # experiment, m1); of the others the newest two.
    assert sorted(trainer.prune_models(keep=2, protected={"m1"})) == ["m3"]
    assert [v for v in ("m1", "m2", "m3", "m4", "m5") if replica.has_model(v)] == [
        "m1",
        "m2",
        "m4",
        "m5",
    ]
    assert trainer.prune_models(keep=2) == ["m1"]


def test_pinned_models_are_never_pruned_by_any_process(backend: Backend) -> None:
    """Pins live in the store: a trainer process that knows no experiment (it has no
    experiment file) spares the versions a serving process pinned."""
    location = backend.location()
    server, trainer = backend.open(location), backend.open(location)
    versions = [f"m{n}" for n in range(1, 8)]
    for version in versions[:6]:  # more than keep + 2
        assert trainer.save_model(version, [("manifest.json", b"{}")])
    assert server.pinned_models() == set()
    assert server.pin_models("experiments", ["m1"]) == set()
    assert trainer.pinned_models() == {"m1"}
    assert sorted(trainer.prune_models(keep=2)) == ["m2", "m3", "m4"]
    assert [v for v in versions if server.has_model(v)] == ["m1", "m5", "m6"]
    # A version not stored (or pruned): nothing changes.
    assert server.pin_models("experiments", ["m5", "m2", "nope"]) == {"m2", "nope"}
    assert trainer.pinned_models() == {"m1"}
    # Pinning again replaces the owner's pins; other owners' pins stay.
    assert server.pin_models("experiments", {"m5"}) == set()
    assert server.pin_models("audit", ["m6", "m6"]) == set()
    assert trainer.pinned_models() == {"m5", "m6"}
    assert trainer.save_model("m7", [("manifest.json", b"{}")])
    assert sorted(trainer.prune_models(keep=0)) == ["m1", "m7"]
    assert [v for v in versions if server.has_model(v)] == ["m5", "m6"]
    # No versions: the owner pins none.
    assert server.pin_models("experiments", []) == set()
    assert backend.open(location).pinned_models() == {"m6"}
    assert trainer.prune_models(keep=0) == ["m5"]
    assert trainer.prune_models(keep=0, protected={"m6"}) == []
    assert [v for v in versions if server.has_model(v)] == ["m6"]


def test_a_lease_has_one_holder_until_it_expires_or_is_released(backend: Backend) -> None:
    location = backend.location()
    one, two = backend.open(location), backend.open(location)
    assert one.lease_holder("trainer") is None
    assert one.acquire_lease("trainer", "A", ttl_seconds=30)
    assert not two.acquire_lease("trainer", "B", ttl_seconds=30)
    assert two.lease_holder("trainer") == "A"
    assert one.acquire_lease("trainer", "A", ttl_seconds=30)  # a renewal
    assert two.acquire_lease("other", "B", ttl_seconds=30)  # leases are independent
    two.release_lease("trainer", "B")  # not B's: nothing happens
    assert two.lease_holder("trainer") == "A"
    one.release_lease("trainer", "A")
    assert two.acquire_lease("trainer", "B", ttl_seconds=0.2)
    time.sleep(0.3)  # expired: anyone may take it
    assert two.lease_holder("trainer") is None
    assert one.acquire_lease("trainer", "A", ttl_seconds=30)


def test_only_the_lease_holder_publishes(backend: Backend) -> None:
    location = backend.location()
    one, two = backend.open(location), backend.open(location)
    one.save_model("m1", [("manifest.json", b"{}")])
    assert one.acquire_lease("trainer", "A", ttl_seconds=0.2)
    assert one.publish_model("m1", lease=("trainer", "A")).version == "m1"
    time.sleep(0.3)
    assert two.acquire_lease("trainer", "B", ttl_seconds=30)
    one.save_model("m2", [("manifest.json", b"{}")])
    with pytest.raises(LeaseLostError, match="not held by 'A'"):
        one.publish_model("m2", lease=("trainer", "A"))
    assert two.current_model() is not None
    assert two.current_model().version == "m1"  # type: ignore[union-attr]


# -- dashboard: replica samples, audit log, saved evaluations ---------------------------------
DAY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def sample(replica: str, time_ms: int, **values: float) -> ReplicaSample:
    return ReplicaSample(replica, time_ms, values or {"events_per_s": 1.0})


def test_replica_samples_come_back_whole_by_replica_and_time(backend: Backend) -> None:
    """Every replica writes its own samples to the shared store; each reads them all."""
    location = backend.location()
    one, two = backend.open(location), backend.open(location)
    now = now_ms()
    figures = {
        "events_per_s": 12.5,
        "recommend_p50_ms": 1.25,
        "recommend_p99_ms": 9.0,
        "recommend_calls": 40,
    }
    one.record_replica_sample(ReplicaSample("r-b", now - 20_000, figures))
    two.record_replica_sample(sample("r-a", now - 10_000, recommend_calls=0))  # no latencies
    one.record_replica_sample(sample("r-b", now - 30_000, events_per_s=0.5))
    two.record_replica_sample(sample("r-a", now - 30_000, events_per_s=2.0))
    assert (
        one.replica_samples(0)
        == two.replica_samples(0)
        == [
            sample("r-a", now - 30_000, events_per_s=2.0),
            sample("r-a", now - 10_000, recommend_calls=0),
            sample("r-b", now - 30_000, events_per_s=0.5),
            ReplicaSample("r-b", now - 20_000, figures),
        ]
    )
    stored = one.replica_samples(now - 20_000)  # from since_ms on, inclusive
    assert [(s.replica, s.time_ms) for s in stored] == [
        ("r-a", now - 10_000),
        ("r-b", now - 20_000),
    ]
    assert all(isinstance(v, float) for s in stored for v in s.values.values())
    assert one.replica_samples(now) == []
    assert one.replica_samples(-(2**70)) == one.replica_samples(0)  # beyond 64 bits: all
    # The same replica and time again: the last write wins.
    two.record_replica_sample(sample("r-a", now - 10_000, recommend_calls=3))
    assert backend.open(location).replica_samples(now - 10_000) == [
        sample("r-a", now - 10_000, recommend_calls=3)
    ]


def test_samples_older_than_a_day_are_gone_after_the_next_write(backend: Backend) -> None:
    location = backend.location()
    store = backend.open(location)
    now = now_ms()
    store.record_replica_sample(sample("young", now - DAY_MS + 60_000))
    store.record_replica_sample(sample("old", now - DAY_MS - 60_000))  # kept until a write
    assert [s.replica for s in store.replica_samples(0)] == ["old", "young"]
    backend.open(location).record_replica_sample(sample("new", now))  # any replica's write
    assert [s.replica for s in store.replica_samples(0)] == ["new", "young"]


def test_unstorable_samples_are_refused_naming_the_field(store: EventStore) -> None:
    now = now_ms()
    for bad, field in (
        (sample("r", now, events_per_s=math.nan), r"values\['events_per_s'\]: must be finite"),
        (sample("r", now, recommend_p99_ms=math.inf), r"values\['recommend_p99_ms'\]"),
        (ReplicaSample("r", now, {"x": True}), r"values\['x'\]: must be a number"),
        (ReplicaSample("r", now, {"x": "1"}), r"values\['x'\]: must be a number"),  # type: ignore[dict-item]
        (ReplicaSample("r", now, {"": 1.0}), "values: a key must not be empty"),
        (sample("", now), "replica: must not be empty"),
        (sample("r\x00", now), "replica: must not contain NUL"),
        (sample("r\udc80", now), "replica: must be valid Unicode text"),
        (sample("r", 2**63), "time_ms: out of the 64-bit range"),
    ):
        with pytest.raises(InvalidInputError, match=field):
            store.record_replica_sample(bad)
    assert store.replica_samples(0) == []


def audit(time_ms: int, target: str = "item:a", detail: str = "available=false") -> AuditEntry:
    return AuditEntry(time_ms, "ops", "availability", target, detail)


def test_audit_entries_are_read_per_target_newest_first(backend: Backend) -> None:
    location = backend.location()
    store = backend.open(location)
    entries = [
        audit(5, detail="first"),
        audit(9, target="item:b"),
        audit(7, detail="later"),
        audit(7, detail="same ms, written after"),
        audit(6, detail="written late, happened before"),
    ]
    for entry in entries:
        store.record_audits([entry])
    newest_first = [entries[3], entries[2], entries[4], entries[0]]
    reopened = backend.open(location)
    assert reopened.audit_entries("item:a") == newest_first
    assert reopened.audit_entries("item:a", limit=2) == newest_first[:2]
    assert reopened.audit_entries("item:a", limit=0) == []
    assert reopened.audit_entries("item:b") == [entries[1]]
    assert reopened.audit_entries("item:") == reopened.audit_entries("item:c\x00") == []
    assert reopened.audit_entries("item:a\udc80") == []
    many = [audit(100 + n, target="item:c") for n in range(60)]
    for entry in many:
        store.record_audits([entry])
    assert store.audit_entries("item:c") == many[::-1][:50]  # 50 unless asked
    with pytest.raises(InvalidInputError, match="limit: must be a non-negative integer"):
        store.audit_entries("item:a", limit=-1)


def test_audit_entries_say_who_did_what_to_what(store: EventStore) -> None:
    for bad, field in (
        (AuditEntry(1, "", "availability", "item:a", ""), "actor: must not be empty"),
        (AuditEntry(1, "ops", "", "item:a", ""), "action: must not be empty"),
        (AuditEntry(1, "ops", "availability", "", ""), "target: must not be empty"),
        (AuditEntry(1, "ops", "availability", "item:a", "\x00"), "detail: must not contain NUL"),
        (AuditEntry(2**64, "ops", "availability", "item:a", ""), "time_ms: out of the 64-bit"),
    ):
        with pytest.raises(InvalidInputError, match=field):
            store.record_audits([AuditEntry(1, "ops", "availability", "item:a", "ok"), bad])
    assert store.audit_entries("item:a") == []  # a batch with a bad entry stores none of it
    store.record_audits([AuditEntry(1, "ops", "availability", "item:a", "")])  # no detail: fine
    store.record_audits([])
    assert len(store.audit_entries("item:a")) == 1


def test_evaluations_are_listed_last_saved_first_and_replaced_whole(backend: Backend) -> None:
    location = backend.location()
    cli, dashboard = backend.open(location), backend.open(location)
    assert dashboard.evaluations() == []
    big = bytes(range(256)) * (5 * 2**20 // 256 + 3)  # more than one chunk
    report = b'{"protocol": "random"}'
    first = cli.save_evaluation(
        "20250101T000000Z-random",
        [("report.json", report), ("metrics.png", big), ("empty.png", b"")],
    )
    assert first.name == "20250101T000000Z-random"
    assert first.files == ("empty.png", "metrics.png", "report.json")  # in byte order
    assert abs(first.saved_ms - now_ms()) < 60_000
    second = cli.save_evaluation("20250102T000000Z-given", [("report.json", b"{}")])
    assert dashboard.evaluations() == [second, first]
    assert dashboard.evaluation_file(first.name, "metrics.png") == big
    assert dashboard.evaluation_file(first.name, "report.json") == report
    assert dashboard.evaluation_file(first.name, "empty.png") == b""
    # The same name again replaces it (its files too) and makes it the last saved.
    again = cli.save_evaluation(first.name, [("report.json", b"{}"), ("Z.png", b"z")])
    assert again.files == ("Z.png", "report.json")
    assert again.saved_ms >= second.saved_ms
    assert backend.open(location).evaluations() == [again, second]
    assert dashboard.evaluation_file(first.name, "report.json") == b"{}"
    with pytest.raises(UnknownIdError, match="file: evaluation '20250101T000000Z-random' has no"):
        dashboard.evaluation_file(first.name, "metrics.png")
    # An evaluation of no files is stored too (listed with none).
    empty = cli.save_evaluation("nothing", [])
    assert dashboard.evaluations()[0] == empty
    assert empty.files == ()


def test_unknown_evaluations_and_files_are_unknown_ids(store: EventStore) -> None:
    store.save_evaluation("e1", [("report.json", b"{}")])
    for name, file, message in (
        ("e2", "report.json", "name: unknown evaluation 'e2'"),
        ("e1", "other.png", "file: evaluation 'e1' has no file 'other.png'"),
        ("../e1", "report.json", "name: unknown evaluation"),  # never storable: not asked
        ("e1", "a\x00b", "file: evaluation 'e1' has no file"),
        ("", "", "name: unknown evaluation ''"),
    ):
        with pytest.raises(UnknownIdError, match=message) as unknown:
            store.evaluation_file(name, file)
        assert isinstance(unknown.value, KeyError)  # as a dict lookup would


def test_evaluation_names_and_file_names_are_single_path_segments(store: EventStore) -> None:
    store.save_evaluation("kept", [("report.json", b"old")])
    for name, files, field in (
        ("", [], "name: must not be empty"),
        ("a/b", [], "name: must be one path segment"),
        ("..", [], "name: must be one path segment"),
        ("a\\b", [], "name: must be one path segment"),
        ("a\nb", [], "name: must not contain control characters"),
        ("a\udc80", [], "name: must be valid Unicode text"),
        ("kept", [("report.json", b"{}"), ("", b"")], r"files\[1\]: must not be empty"),
        ("kept", [("../report.json", b"{}")], r"files\[0\]: must be one path segment"),
        ("kept", [("plots/a.png", b"")], r"files\[0\]: must be one path segment"),
        ("kept", [("a..png", b"")], r"files\[0\]: must be one path segment"),
        ("kept", [("a.png", b""), ("a.png", b"")], r"files\[1\]: 'a.png' is given twice"),
        ("kept", [("a.png", "text")], r"files\[0\]: 'a.png': bytes expected"),
    ):
        with pytest.raises(InvalidInputError, match=field):
            store.save_evaluation(name, files)  # type: ignore[arg-type]
    assert [e.name for e in store.evaluations()] == ["kept"]
    assert store.evaluation_file("kept", "report.json") == b"old"


REFUSED_FILE = {
    "sqlite": (
        "CREATE TRIGGER refuse_file BEFORE INSERT ON evaluation_files WHEN NEW.file = 'bad.png' "
        "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
    ),
    "postgresql": (
        "CREATE FUNCTION refuse_file() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.file = 'bad.png' THEN RAISE EXCEPTION 'refused by test'; END IF;"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER refuse_file BEFORE INSERT ON evaluation_files FOR EACH ROW"
        " EXECUTE FUNCTION refuse_file()"
    ),
}


def test_a_failed_replacement_leaves_the_evaluation_as_it_was(backend: Backend) -> None:
    location = backend.location()
    store = backend.open(location)
    kept = store.save_evaluation("e1", [("report.json", b"old"), ("a.png", b"a")])
    backend.execute(location, REFUSED_FILE[backend.name])
    with pytest.raises(StorageError, match=r"save_evaluation: .*refused by test"):
        store.save_evaluation("e1", [("report.json", b"new"), ("bad.png", b"")])
    assert store.evaluations() == [kept]
    assert store.evaluation_file("e1", "report.json") == b"old"
    assert store.evaluation_file("e1", "a.png") == b"a"
    assert store.integrity_check() == "ok"


def test_iter_events_runs_in_seq_order_across_pages_and_after_a_seq(store: EventStore) -> None:
    seqs: list[int] = []
    for start in range(0, 9, 3):
        batch = [ev(f"e{i}", user=f"u{i % 2}") for i in range(start, start + 3)]
        seqs += store.append_events(batch).seqs
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 9
    everything = list(store.iter_events())
    assert [seq for seq, _ in everything] == seqs
    assert ids(everything) == [f"e{i}" for i in range(9)]
    assert list(store.iter_events(batch=2)) == everything
    assert list(store.iter_events(after_seq=seqs[4], batch=3)) == everything[5:]
    assert list(store.iter_events(after_seq=seqs[-1])) == []
    assert ids(store.events_for_user("u1", after_seq=seqs[3])) == ["e5", "e7"]
    assert store.last_seq() == seqs[-1]


def test_item_event_counts_are_incremental(store: EventStore) -> None:
    assert store.item_event_counts() == (0, [])
    store.append_events(
        [ev("a"), ev("b", item="i2"), ev("c", kind=EventType.PURCHASE), ev("d", user="u2")]
    )
    last, counts = store.item_event_counts()
    assert last == store.last_seq()
    assert sorted(counts) == [
        ("i1", EventType.VIEW, 2),
        ("i1", EventType.PURCHASE, 1),
        ("i2", EventType.VIEW, 1),
    ]
    store.append_events([ev("e", item="i2"), ev("a"), ev("f", item="i3", kind=EventType.DISMISS)])
    later, more = store.item_event_counts(after_seq=last)
    assert later == store.last_seq() > last
    assert sorted(more) == [("i2", EventType.VIEW, 1), ("i3", EventType.DISMISS, 1)]
    assert store.item_event_counts(after_seq=later) == (later, [])


def test_counts(store: EventStore) -> None:
    assert store.counts().events == store.counts().users_with_events == 0
    store.append_events([ev("a"), ev("b"), ev("c", user="u2"), ev("d", user="u3")])
    store.upsert_items([("i1", []), ("i2", ["x"])])
    store.upsert_users([("u1", ["s"])])
    counts = store.counts()
    assert (counts.events, counts.users_with_events, counts.items, counts.users) == (4, 3, 2, 1)
    store.delete_user("u3")
    store.delete_user("u1")
    counts = store.counts()
    assert (counts.events, counts.users_with_events, counts.items, counts.users) == (1, 1, 2, 0)


def test_a_newer_schema_is_refused(backend: Backend) -> None:
    location = backend.location()
    backend.open(location).close()
    backend.execute(location, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="schema 99 is newer"):
        open_store(location)


# -- failures ---------------------------------------------------------------------------------
REFUSAL = {
    "sqlite": (
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.item_id = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
    ),
    "postgresql": (
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.item_id = 'bad' THEN RAISE EXCEPTION 'refused by test'; END IF;"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()"
    ),
}


def test_a_failed_append_stores_nothing_and_the_store_keeps_working(backend: Backend) -> None:
    location = backend.location()
    store = backend.open(location)
    store.append_events([ev("kept")])
    backend.execute(location, REFUSAL[backend.name])
    with pytest.raises(StorageError, match=r"append_events: .*refused by test") as refused:
        store.append_events([ev("x1"), ev("x2", item="bad")])
    assert isinstance(refused.value.__cause__, sqlite3.Error | psycopg.Error)
    assert ids(list(store.iter_events())) == ["kept"]
    after = store.append_events([ev("after"), ev("x1")])  # nothing of the failed batch
    assert after.accepted == (0, 1)
    assert ids(list(store.iter_events())) == ["kept", "after", "x1"]
    assert after.seqs[0] == store.last_seq() - 1
    assert store.integrity_check() == "ok"


REFUSED_IMPRESSION = {
    "sqlite": (
        "CREATE TRIGGER refuse BEFORE INSERT ON impressions WHEN NEW.user_id = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
    ),
    "postgresql": (
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.user_id = 'bad' THEN RAISE EXCEPTION 'refused by test'; END IF;"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER refuse BEFORE INSERT ON impressions FOR EACH ROW EXECUTE FUNCTION refuse()"
    ),
}


def test_a_failed_record_stores_none_of_its_impressions(backend: Backend) -> None:
    location = backend.location()
    store = backend.open(location)
    store.record_impressions([imp("kept")])
    backend.execute(location, REFUSED_IMPRESSION[backend.name])
    batch = [imp("r1", experiment="new"), imp("r2", user="bad")]
    with pytest.raises(StorageError, match=r"record_impressions: .*refused by test") as refused:
        store.record_impressions(batch)
    assert isinstance(refused.value.__cause__, sqlite3.Error | psycopg.Error)
    assert [i.recommendation_id for i in store.impressions_between(0, 2**62)] == ["kept"]
    assert store.record_impressions([imp("r1", experiment="new")]) == 1
    assert [i.experiment for i in store.impressions_between(0, 2**62)] == ["", "new"]


# -- concurrency ------------------------------------------------------------------------------
def test_concurrent_batches_commit_together_and_each_id_is_accepted_once(
    store: EventStore,
) -> None:
    """Many writer threads with overlapping ids; every id is stored once and accepted by
    exactly one caller, and positions refer to each caller's own batch."""
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
    stored = ids(list(store.iter_events()))
    assert reported == {e.event_id: seq for seq, e in store.iter_events()}
    assert sorted(accepted_ids) == sorted(stored)
    assert len(stored) == len(set(stored))
    assert store.integrity_check() == "ok"


def test_concurrent_writers_of_the_same_impressions_store_each_once(backend: Backend) -> None:
    """Four stores on one location (four processes) record overlapping impressions in
    different orders at once: each is stored once, and the counts returned add up."""
    location = backend.location()
    stores = [backend.open(location) for _ in range(4)]
    keys = [(f"r{n}", kind) for n in range(60) for kind in (SERVED, SHOWN)]
    returned: list[int] = []
    errors: list[BaseException] = []

    def record(number: int, store: EventStore) -> None:
        mine = keys if number % 2 else keys[::-1]
        try:
            for start in range(0, len(mine), 15):
                chunk = mine[start : start + 15]
                returned.append(store.record_impressions([imp(r, k) for r, k in chunk]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(n, s)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = [(i.recommendation_id, i.kind) for i in stores[0].impressions_between(0, 2**62)]
    assert sorted(stored) == sorted(keys)
    assert sum(returned) == len(keys)
    # Each recommendation id counted once (on PostgreSQL, a SERVED and a SHOWN record of one
    # id stored at the same moment may both count: see store_postgres.py).
    shown = [stores[0].item_feedback(item, 0)[0] for item in ("i1", "i2")]
    assert shown == [60, 60] if backend.name == "sqlite" else min(shown) >= 60


def test_concurrent_writers_of_the_same_counters_all_count(backend: Backend) -> None:
    """Impression writers and appenders in four processes upsert the same items' counters
    at once, their lists in different orders: none waits forever (no deadlock) and every
    count is kept."""
    location = backend.location()
    stores = [backend.open(location) for _ in range(4)]
    items = tuple(f"i{n}" for n in range(30))
    errors: list[BaseException] = []

    def record(number: int, store: EventStore) -> None:
        order = items if number % 2 else items[::-1]
        try:
            for batch in range(10):
                store.record_impressions(
                    [
                        imp(f"r{number}-{batch}-{k}", user="u1", time_ms=DAY0 + k, items=order)
                        for k in range(30)
                    ]
                )
                store.append_events(
                    [
                        ev(f"e{number}-{batch}-{k}-{item}", "u1", item, timestamp_ms=DAY0)._replace(
                            recommendation_id=f"r{number}-{batch}-{k}"
                        )
                        for k in range(30)
                        for item in (order[k], order[-1 - k])
                    ]
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(n, s)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # 4 writers x 10 batches x 30 lists hold every item; each item is clicked twice in
    # every batch of every writer (as order[k] and as order[-1-k] of another k).
    assert {stores[0].item_feedback(item, DAY0) for item in items} == {(1200, 80)}


def test_no_impression_outlives_an_erasure_it_races(backend: Backend) -> None:
    """Three stores on one location (three processes) record a user's impressions (with
    the erasure their sender had seen, and what was shown naming no user) while a fourth
    erases the user: afterwards none of them is stored. Each was either stored before the
    erasure (and erased) or checked after it (and dropped)."""
    location = backend.location()
    writers = [backend.open(location) for _ in range(3)]
    eraser = backend.open(location)
    for round_ in range(5):
        victim = f"victim{round_}"
        seen = eraser.latest_erasure(victim)
        racing = _ImpressionRace(victim, seen, prefix=f"{round_}-")
        threads = [
            threading.Thread(target=racing.write, args=(n, s)) for n, s in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        assert racing.wrote.wait(30)
        assert eraser.delete_user(victim)[0]
        racing.erased.set()
        for thread in threads:
            thread.join()
        assert racing.errors == []
        assert eraser.latest_erasure(victim) > seen
        left = [
            i
            for i in eraser.impressions_between(INT64_MIN, INT64_MAX)
            if i.recommendation_id.startswith(racing.prefix)
        ]
        assert left == []


class _ImpressionRace:
    """Writers of one user's impressions, until a few batches after ``erased`` is set."""

    def __init__(self, user: str, seen: int, prefix: str) -> None:
        self.user, self.seen, self.prefix = user, seen, prefix
        self.wrote, self.erased = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []

    def write(self, number: int, store: EventStore) -> None:
        try:
            after, batch_number = 0, 0
            while after < 3:
                after += self.erased.is_set()
                batch: list[Impression] = []
                for j in range(20):
                    rid = f"{self.prefix}{number}-{batch_number}-{j}"
                    batch += [
                        replace(imp(rid, user=self.user), erasure_seen=self.seen),
                        replace(imp(rid, SHOWN, user=""), erasure_seen=self.seen),
                    ]
                store.record_impressions(batch)
                batch_number += 1
                self.wrote.set()
        except BaseException as exc:
            self.errors.append(exc)


def test_a_reader_never_sees_an_event_appear_below_the_last_seq_it_saw(backend: Backend) -> None:
    """Writers in three stores on one location (three processes) append while a reader
    notes (last seq, the events up to it) over and over: at the end, the events up to each
    noted seq are exactly those it saw (an event committed later has a larger seq)."""
    location = backend.location()
    writers = [backend.open(location) for _ in range(3)]
    reader = backend.open(location)
    done = threading.Event()
    seen: list[tuple[int, list[tuple[int, str]]]] = []

    def write(number: int, store: EventStore) -> None:
        for b in range(25):
            store.append_events([ev(f"w{number}-{b}-{i}", user=f"u{i % 4}") for i in range(20)])

    def read() -> None:
        while not done.is_set():
            last = reader.last_seq()
            seen.append((last, [(s, e.event_id) for s, e in reader.iter_events() if s <= last]))

    threads = [threading.Thread(target=write, args=(n, s)) for n, s in enumerate(writers)]
    watcher = threading.Thread(target=read)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    final = [(s, e.event_id) for s, e in reader.iter_events()]
    assert len(final) == 3 * 25 * 20
    assert len(seen) > 1
    for last, visible in seen:
        assert [(s, i) for s, i in final if s <= last] == visible


CHILD = """
import sys
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.stores import open_store
store = open_store(sys.argv[1])
tag = sys.argv[2]
for b in range(15):
    batch = [StoredEvent(f"e{b}-{i}", f"u{i % 5}", "i", EventType.VIEW, 1) for i in range(40)]
    result = store.append_events(batch)
    for position, seq in zip(result.accepted, result.seqs, strict=True):
        print(batch[position].event_id, seq)
store.close()
"""


def test_processes_appending_the_same_ids_store_each_once(backend: Backend) -> None:
    """Three processes append the same 600 ids at once: each id is accepted by exactly one
    of them, under the seq it is stored with, and seqs are distinct."""
    location = backend.location()
    backend.open(location).close()  # the schema exists before the children race
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, location, str(n)], stdout=subprocess.PIPE, text=True
        )
        for n in range(3)
    ]
    accepted: list[tuple[str, int]] = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        accepted += [(line.split()[0], int(line.split()[1])) for line in out.splitlines()]
    stored = [(e.event_id, seq) for seq, e in backend.open(location).iter_events()]
    assert len(stored) == 600
    assert sorted(accepted) == sorted(stored)
    assert len({seq for _, seq in stored}) == 600


# -- properties -------------------------------------------------------------------------------
events_strategy = st.lists(
    st.builds(
        ev,
        st.sampled_from([f"e{i}" for i in range(12)]),
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["i1", "i2", "i3"]),
    ),
    max_size=30,
)


@settings(HYPOTHESIS, max_examples=25)
@given(events_strategy, st.randoms(use_true_random=False), st.integers(1, 7))
def test_any_order_and_batching_stores_each_event_id_once(
    backend: Backend, batch: list[StoredEvent], rng: Any, size: int
) -> None:
    # Same event id always carries the same content in a real client; keep the first.
    canonical = {e.event_id: e for e in reversed(batch)}
    shuffled = [canonical[e.event_id] for e in batch]
    rng.shuffle(shuffled)
    with backend.fresh() as store:
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


impression_batches = st.lists(
    st.lists(
        st.builds(
            imp,
            st.sampled_from(["r1", "r2", "R1", "r é"]),
            st.sampled_from([SERVED, SHOWN]),
            st.sampled_from(["u1", "u2", ""]),
            st.integers(0, 3),
            st.lists(st.sampled_from(["i1", "i2", "ü"]), max_size=3).map(tuple),
            experiment=st.sampled_from(["", "exp"]),
            variant=st.sampled_from(["", "a", "b"]),
        ),
        max_size=8,
    ),
    max_size=5,
)


@settings(HYPOTHESIS, max_examples=25)
@given(impression_batches)
def test_recorded_impressions_are_the_first_of_each_id_and_kind(
    backend: Backend, batches: list[list[Impression]]
) -> None:
    first: dict[tuple[str, ImpressionKind], Impression] = {}
    with backend.fresh() as store:
        for batch in batches:
            stored_before = len(first)
            for impression in batch:  # the first SERVED of an id, stored or in the batch
                if impression.kind is SERVED:
                    first.setdefault((impression.recommendation_id, SERVED), impression)
            for impression in batch:
                served = first.get((impression.recommendation_id, SERVED))
                if impression.kind is SHOWN and not impression.user_id and served is not None:
                    # Names no user: takes its SERVED one's (the user's erasure takes it).
                    impression = replace(impression, user_id=served.user_id)
                first.setdefault((impression.recommendation_id, impression.kind), impression)
            assert store.record_impressions(batch) == len(first) - stored_before
        expected = sorted(
            first.values(),
            key=lambda i: (i.time_ms, i.recommendation_id.encode(), i.kind != SERVED),
        )
        assert list(store.impressions_between(0, 4)) == expected
        assert list(store.impressions_between(1, 3)) == [i for i in expected if 1 <= i.time_ms < 3]


USERS = ("u1", "u2", "u3")
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.integers(0, 1),  # which store (two processes on one location)
            st.lists(st.tuples(st.integers(0, 15), st.sampled_from(USERS)), max_size=6),
            st.none() | st.integers(0, 3),  # erasure_seen: the n-th latest erasure known
        ),
        st.tuples(st.just("delete"), st.integers(0, 1), st.sampled_from(USERS), st.none()),
        st.tuples(st.just("reopen"), st.integers(0, 1), st.just(""), st.none()),
    ),
    max_size=20,
)


class Model:
    """What a store holds, in plain Python: the contract's semantics, slowly."""

    def __init__(self) -> None:
        self.stored: dict[str, StoredEvent] = {}  # in seq order
        self.erased_ids: set[str] = set()
        self.marked: set[str] = set()  # users ever erased
        self.latest: dict[str, int] = {}  # user -> latest erasure id, as the store said

    def append(
        self, batch: list[StoredEvent], erasure_seen: int | None
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        accepted: list[int] = []
        duplicates: list[int] = []
        erased: list[int] = []
        for position, event in enumerate(batch):
            if erasure_seen is not None and self.latest.get(event.user_id, 0) > erasure_seen:
                erased.append(position)
            elif event.event_id in self.stored or event.event_id in self.erased_ids:
                duplicates.append(position)
            else:
                self.stored[event.event_id] = event
                accepted.append(position)
        return tuple(accepted), tuple(duplicates), tuple(erased)

    def delete(self, user: str, erasure: int) -> tuple[bool, int]:
        gone = [event_id for event_id, e in self.stored.items() if e.user_id == user]
        for event_id in gone:
            del self.stored[event_id]
        self.erased_ids.update(gone)
        self.marked.add(user)
        assert erasure > max(self.latest.values(), default=0)  # numbered in order
        self.latest[user] = erasure
        return bool(gone), len(gone)

    def history(self, user: str) -> list[StoredEvent]:
        return [e for e in self.stored.values() if e.user_id == user]


@settings(HYPOTHESIS, max_examples=25)
@given(operations)
def test_random_appends_erasures_and_reopens_match_a_model(
    backend: Backend, ops: list[tuple[str, int, Any, int | None]]
) -> None:
    """Two stores on one location (two processes) take turns appending (with and without
    erasure_seen), erasing and reopening; after every step both agree with the model."""
    location = backend.location()
    stores = [open_store(location), open_store(location)]
    model = Model()
    erasures_seen = [0]  # every latest_erasure value the store has answered
    try:
        for op, index, arg, seen_index in ops:
            store = stores[index]
            if op == "append":
                batch = [ev(f"e{n}-{user}", user=user, item=f"i{n % 3}") for n, user in arg]
                seen = None if seen_index is None else erasures_seen[-1 - seen_index % 3 :][0]
                result = store.append_events(batch, erasure_seen=seen)
                assert (result.accepted, result.duplicates, result.erased) == model.append(
                    batch, seen
                )
                assert list(result.seqs) == sorted(result.seqs)
            elif op == "delete":
                before = model.stored.copy()
                existed, deleted = store.delete_user(arg)
                erasure = store.latest_erasure(arg)
                erasures_seen.append(erasure)
                expected = model.delete(arg, erasure)
                assert (existed, deleted) == expected, before
            else:
                store.close()
                stores[index] = open_store(location)
            # What the other process sees (the one that acted sees the same, checked below).
            check_against_model(stores[1 - index], model)
        for store in stores:
            check_against_model(store, model)
    finally:
        for store in stores:
            store.close()


def check_against_model(store: EventStore, model: Model) -> None:
    everything = list(store.iter_events())
    assert [e for _, e in everything] == list(model.stored.values())
    seqs = [seq for seq, _ in everything]
    assert seqs == sorted(set(seqs))
    last = store.last_seq()
    assert last >= max(seqs, default=0)
    for user in USERS:
        expected = model.history(user)
        history_last, history = store.user_history(user)
        assert history_last == last
        assert [e for _, e in history] == expected
        assert store.events_for_user(user) == history
        erased = user in model.marked and not expected
        assert store.erasure_state(user) == (model.latest.get(user, 0), erased)
    assert store.erased_among(USERS) == {
        u for u in USERS if u in model.marked and not model.history(u)
    }
    counts = store.counts()
    assert counts.events == len(model.stored)
    assert counts.users_with_events == len({e.user_id for e in model.stored.values()})
    _, per_item = store.item_event_counts()
    assert sum(count for _, _, count in per_item) == len(model.stored)


# -- SQLite only ------------------------------------------------------------------------------
def test_open_store_opens_sqlite_for_a_folder_or_a_file(tmp_path: Path) -> None:
    folder = open_store(tmp_path / "state")
    assert isinstance(folder, SQLiteStore)
    assert folder.path == tmp_path / "state" / "events.sqlite3"
    folder.close()
    file = open_store(str(tmp_path / "other.sqlite3"))
    assert isinstance(file, SQLiteStore)
    file.close()


def test_a_postgresql_url_as_a_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="pass a PostgreSQL URL as a str"):
        open_store(Path("postgresql://user@db.example/shop"))
    assert not Path("postgresql:").exists()


# -- PostgreSQL only --------------------------------------------------------------------------
def test_open_store_opens_postgresql_for_both_url_schemes(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        try:
            assert isinstance(store, PostgresStore)
            assert store.integrity_check() == "ok"
        finally:
            store.close()


def test_a_schema_1_catalogue_becomes_revision_1(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    store.upsert_items([("b", ["x=1"]), ("a", [])])
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:  # as schema 1 left it
        connection.execute("DROP TABLE catalogue_counter")
        connection.execute("DROP INDEX items_by_revision")
        connection.execute("ALTER TABLE items DROP COLUMN revision")
        connection.execute("ALTER TABLE items DROP COLUMN available")
        connection.execute("ALTER TABLE items DROP COLUMN added_ms")
        connection.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    store = PostgresStore(pg_url)
    try:
        assert tokens_only(store.catalogue_changes()) == (1, [("a", ()), ("b", ("x=1",))])
        assert all(e.available and e.added_ms > 0 for e in store.catalogue_changes()[1])
        store.upsert_items([("c", ["y=2"])])
        assert tokens_only(store.catalogue_changes(1)) == (2, [("c", ("y=2",))])
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_a_schema_3_store_gets_attribution_and_impressions_and_keeps_its_data(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url)
    old = [ev("a"), ev("b", user="u2", timestamp_ms=5)]
    store.append_events(old)
    store.upsert_users([("u1", ["segment=a"])])
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:  # as schema 3 left it
        connection.execute(
            "DROP TABLE impressions, impression_contexts, model_pins, replica_samples, audit,"
            " evaluations, evaluation_files, item_days"
        )
        connection.execute("ALTER TABLE events DROP COLUMN recommendation_id, DROP COLUMN position")
        connection.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    store = PostgresStore(pg_url)
    try:
        assert [e for _, e in store.iter_events()] == old  # no response known: "", 0
        clicked = ev("c", timestamp_ms=7)._replace(recommendation_id="r1", position=2)
        store.append_events([clicked])
        assert [e for _, e in store.user_view("u1").events] == [old[0], clicked]
        assert list(store.events_between(0, 10)) == [old[1], clicked]
        assert store.user_features() == {"u1": ("segment=a",)}
        assert store.record_impressions([imp("r1", time_ms=6)]) == 1
        assert list(store.impressions_between(0, 10)) == [imp("r1", time_ms=6)]
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(PG_SCHEMA_VERSION),)


def test_a_schema_4_store_gets_model_pins_and_keeps_its_models(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    for version in ("m1", "m2", "m3", "m4"):
        store.save_model(version, [("manifest.json", version.encode())])
    store.publish_model("m4")
    store.record_impressions([imp("r1")])
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:  # as schema 4 left it
        connection.execute(
            "DROP TABLE model_pins, replica_samples, audit, evaluations, evaluation_files,"
            " item_days"
        )
        connection.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    store = PostgresStore(pg_url)
    try:
        assert store.pinned_models() == set()
        assert store.model_files("m1") == [("manifest.json", b"m1")]
        assert store.pin_models("experiments", ["m1"]) == set()
        assert sorted(store.prune_models(keep=1)) == ["m2"]
        assert [v for v in ("m1", "m2", "m3", "m4") if store.has_model(v)] == ["m1", "m3", "m4"]
        assert list(store.impressions_between(0, 2**62)) == [imp("r1")]
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(PG_SCHEMA_VERSION),)


def test_a_schema_5_store_gets_the_dashboard_tables_and_keeps_its_data(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    store.append_events([ev("a")])
    store.save_model("m1", [("manifest.json", b"m1")])
    store.pin_models("experiments", ["m1"])
    store.record_impressions([imp("r1")])
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:  # as schema 5 left it
        connection.execute(
            "DROP TABLE replica_samples, audit, evaluations, evaluation_files, item_days"
        )
        connection.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    store = PostgresStore(pg_url)
    try:
        assert [e.event_id for _, e in store.iter_events()] == ["a"]
        assert store.pinned_models() == {"m1"}
        assert store.model_files("m1") == [("manifest.json", b"m1")]
        assert list(store.impressions_between(0, 2**62)) == [imp("r1")]
        assert store.replica_samples(0) == []
        assert store.audit_entries("item:a") == []
        assert store.evaluations() == []
        now = now_ms()
        store.record_replica_sample(sample("r1", now))
        store.record_audits([audit(now)])
        saved = store.save_evaluation("e1", [("report.json", b"{}")])
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(PG_SCHEMA_VERSION),) == ("9",)
    store = PostgresStore(pg_url)
    try:
        assert store.replica_samples(0) == [sample("r1", now)]
        assert store.audit_entries("item:a") == [audit(now)]
        assert store.evaluations() == [saved]
        assert store.evaluation_file("e1", "report.json") == b"{}"
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_a_schema_6_store_counts_its_impressions_and_clicks_per_item_and_day(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url)
    fill_for_counting(store)
    assert counted(store) == COUNTED_AT_WRITE
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:  # as schema 6 left it
        connection.execute("DROP TABLE item_days")
        connection.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    store = PostgresStore(pg_url)
    try:
        assert counted(store) == COUNTED_FROM_STORED
        assert [e.event_id for _, e in store.iter_events()] == ["early", "c1", "c2", "c3"]
        assert len(list(store.impressions_between(0, 2**62))) == 4
        # Counted once: a second open counts nothing again, and writes go on counting.
        store.close()
        store = PostgresStore(pg_url)
        assert counted(store) == COUNTED_FROM_STORED
        store.record_impressions([imp("r3", time_ms=DAY0, items=("b",))])
        assert per_day(store, "b", days=1) == [(2, 0)]
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(PG_SCHEMA_VERSION),) == ("9",)


def test_a_schema_7_catalogue_gets_item_keys(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    store.upsert_items([("b", ["x=1"]), ("a", [])])
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as connection:  # as schema 7 left it
        connection.execute("ALTER TABLE items DROP COLUMN item_key")
        connection.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    store = PostgresStore(pg_url)
    try:
        keys = {e.item_id: e.key for e in store.catalogue_changes()[1]}
        assert sorted(keys.values()) == [1, 2]
        store.upsert_items([("c", []), ("a", ["x=2"])])
        again = {e.item_id: e.key for e in store.catalogue_changes()[1]}
        assert {item: again[item] for item in keys} == keys
        assert again["c"] > max(keys.values())
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def _wait_for_lock_waiters(url: str, count: int) -> None:
    """Until ``count`` sessions of the database wait for a lock (the counter row's)."""
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + 30
        while True:
            row = watcher.execute(
                "SELECT COUNT(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            assert time.monotonic() < deadline, "no session waits for the counter lock"
            time.sleep(0.005)


def test_no_event_commits_at_or_below_a_last_seq_already_seen(pg_url: str) -> None:
    """Transaction A appends and holds before commit; B (another process's store) tries to
    append and waits for the counter lock; a reader notes the last seq and the events up
    to it; A commits; B appends and holds; the reader notes again; B commits. Every event
    with a seq up to a noted last seq was seen when it was noted: nothing committed later
    fell between a watermark and what came after it."""
    a, b, reader = (PostgresStore(pg_url) for _ in range(3))
    try:
        a.append_events([ev("old")])
        inserted = {"a": threading.Event(), "b": threading.Event()}
        release = {"a": threading.Event(), "b": threading.Event()}

        def holder(name: str) -> Callable[[], None]:
            def hold() -> None:
                inserted[name].set()
                if not release[name].wait(30):
                    raise TimeoutError(f"{name} was never released")

            return hold

        a._before_commit, b._before_commit = holder("a"), holder("b")
        results: dict[str, AppendResult] = {}
        threads = {
            "a": threading.Thread(
                target=lambda: results.update(a=a.append_events([ev("a1"), ev("a2", user="u2")]))
            ),
            "b": threading.Thread(target=lambda: results.update(b=b.append_events([ev("b1")]))),
        }

        def note() -> tuple[int, list[tuple[int, str]]]:
            last = reader.last_seq()
            return last, [(s, e.event_id) for s, e in reader.iter_events() if s <= last]

        threads["a"].start()
        assert inserted["a"].wait(30)  # A inserted, holds the lock, not committed
        threads["b"].start()
        _wait_for_lock_waiters(pg_url, 1)  # B waits for the counter row
        assert not inserted["b"].is_set()
        first = note()
        release["a"].set()  # A commits; B takes the lock, inserts, holds
        assert inserted["b"].wait(30)
        second = note()
        release["b"].set()
        for thread in threads.values():
            thread.join(timeout=30)
        final = [(s, e.event_id) for s, e in reader.iter_events()]
        for last, visible in (first, second):
            assert [(s, i) for s, i in final if s <= last] == visible
        assert first == (1, [(1, "old")])
        assert second == (3, [(1, "old"), (2, "a1"), (3, "a2")])
        assert (results["a"].seqs, results["b"].seqs) == ((2, 3), (4,))
        assert reader.user_history("u1") == (
            4,
            [(1, ev("old")), (2, ev("a1")), (4, ev("b1"))],
        )
    finally:
        for store in (a, b, reader):
            store.close()


def test_an_erasure_waits_for_an_append_holding_the_counter(pg_url: str) -> None:
    """An append of u1 holds before commit; an erasure of u1 (another process) waits for it
    and then erases the appended event too; an append with the old erasure_seen after
    it is refused."""
    writer, eraser = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        inserted, release = threading.Event(), threading.Event()

        def hold() -> None:
            inserted.set()
            if not release.wait(30):
                raise TimeoutError("never released")

        writer._before_commit = hold
        appending = threading.Thread(target=lambda: writer.append_events([ev("a"), ev("b")]))
        appending.start()
        assert inserted.wait(30)
        outcome: list[tuple[bool, int]] = []
        erasing = threading.Thread(target=lambda: outcome.append(eraser.delete_user("u1")))
        erasing.start()
        _wait_for_lock_waiters(pg_url, 1)
        release.set()
        appending.join(timeout=30)
        erasing.join(timeout=30)
        writer._before_commit = None
        assert outcome == [(True, 2)]
        assert eraser.events_for_user("u1") == []
        assert writer.append_events([ev("a"), ev("c")], erasure_seen=0).erased == (0, 1)
        assert writer.integrity_check() == "ok"
    finally:
        writer.close()
        eraser.close()


def test_a_plain_sequence_would_not_be_commit_ordered(pg_url: str) -> None:
    """Why the counter row: with ``nextval``, a transaction can commit seq 1 after a reader
    saw seq 2 as the last one (the hazard the store's design rules out)."""
    with (
        psycopg.connect(pg_url, autocommit=True) as first,
        psycopg.connect(pg_url, autocommit=True) as second,
    ):
        first.execute("CREATE TABLE naive (seq BIGSERIAL PRIMARY KEY, name TEXT)")
        with first.transaction():
            first.execute("INSERT INTO naive (name) VALUES ('slow')")  # takes seq 1
            second.execute("INSERT INTO naive (name) VALUES ('fast')")  # seq 2, committed
            seen = second.execute("SELECT MAX(seq), COUNT(*) FROM naive").fetchone()
        assert seen == (2, 1)  # "the last seq is 2", yet seq 1 was not there...
        assert second.execute("SELECT seq FROM naive WHERE name = 'slow'").fetchone() == (1,)


def test_many_threads_share_a_small_pool(pg_url: str) -> None:
    store = PostgresStore(pg_url, pool_size=2)
    try:
        store.append_events([ev(f"e{i}", user=f"u{i % 4}") for i in range(40)])
        errors: list[BaseException] = []

        def read() -> None:
            try:
                for _ in range(20):
                    assert len(store.user_history("u1")[1]) == 10
                    assert store.counts().events == 40
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    finally:
        store.close()


def test_stores_opened_at_once_on_a_new_database_create_the_schema_once(
    postgres_url: str,
) -> None:
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(postgres_url, pool_size=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len(opened) == 4
        opened[0].append_events([ev("a")])
        assert [s.last_seq() for s in opened] == [1, 1, 1, 1]
    finally:
        for store in opened:
            store.close()


def test_connections_the_server_dropped_are_replaced(pg_url: str) -> None:
    store = PostgresStore(pg_url, pool_size=3)
    try:
        store.append_events([ev("a")])
        with psycopg.connect(pg_url, autocommit=True) as admin:
            others = (
                "FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
            killed = admin.execute(f"SELECT COUNT(pg_terminate_backend(pid)) {others}")
            assert (killed.fetchone() or (0,))[0] >= 1
            deadline = time.monotonic() + 30
            while admin.execute(f"SELECT COUNT(*) {others}").fetchone() != (0,):
                assert time.monotonic() < deadline, "terminated sessions linger"
                time.sleep(0.005)
        assert store.last_seq() == 1  # no call fails for it
        assert store.append_events([ev("b")]).seqs == (2,)
    finally:
        store.close()


def test_postgres_errors_are_storage_errors_naming_the_host_not_the_password() -> None:
    with socket_free_port() as port:
        url = f"postgresql://shop:s3cret-pw@127.0.0.1:{port}/shop?connect_timeout=5"
        with pytest.raises(StorageError) as refused:
            PostgresStore(url)
    message = str(refused.value)
    assert message.startswith(f"event store (PostgreSQL at 127.0.0.1:{port}/shop): open: ")
    assert "s3cret-pw" not in message
    assert isinstance(refused.value.__cause__, psycopg.OperationalError)


@contextmanager
def socket_free_port() -> Iterator[int]:
    """A loopback port nothing listens on (held bound, not listening, meanwhile)."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def test_a_broken_schema_is_a_storage_error_naming_the_method(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        store.append_events([ev("a"), ev("b")])
        with psycopg.connect(pg_url, autocommit=True) as raw:
            raw.execute("UPDATE seq_counter SET last_seq = 1")
        assert store.integrity_check() == "seq counter 1 is below the highest stored seq 2"
        with psycopg.connect(pg_url, autocommit=True) as raw:
            raw.execute("DROP TABLE events")
        with pytest.raises(StorageError, match=r"iter_events: .*events.* does not exist"):
            list(store.iter_events())
        with pytest.raises(StorageError, match="append_events: "):
            store.append_events([ev("c")])
    finally:
        store.close()
    with pytest.raises(StorageError, match=r"last_seq: .*closed"):
        store.last_seq()


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(InvalidInputError, match="pool_size: must be at least 1, got 0"):
        PostgresStore("postgresql://shop@127.0.0.1/shop", pool_size=0)
