"""The binary arrays the PostgreSQL store sends a batch in (server/pg_arrays.py): the same
bytes psycopg's own dumper writes, and what a real PostgreSQL reads back is the list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.adapt import PyFormat, Transformer

from shelfrank.core.errors import StorageError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server import pg_arrays
from shelfrank.server.pg_arrays import BigintArray, IntegerArray, SmallintArray, TextArray
from shelfrank.server.store_postgres import PostgresStore

# PostgreSQL text holds any character but NUL; lone surrogates are not UTF-8 (a protobuf
# string cannot hold one).
TEXTS = st.lists(
    st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"])),
    max_size=40,
)
INT_ARRAYS = [
    (SmallintArray, "smallint", 16),
    (IntegerArray, "integer", 32),
    (BigintArray, "bigint", 64),
]


@pytest.fixture(scope="module")
def connection(postgres_database: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(postgres_database, autocommit=True) as opened:
        pg_arrays.register(opened.adapters)
        yield opened


def _psycopg_bytes(values: list[str]) -> bytes:
    """psycopg's own binary dump of ``values`` as text[] (the reference)."""
    transformer = Transformer()
    if values:
        dumper = transformer.get_dumper(values, PyFormat.BINARY)
    else:  # an empty list has no element to choose a dumper by: name the type
        dumper = transformer.get_dumper([""], PyFormat.BINARY)
    dumped = dumper.dump(values)
    assert dumped is not None
    return bytes(dumped)


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_a_text_array_is_the_bytes_psycopg_writes(values: list[str]) -> None:
    assert TextArray.of(values).payload == _psycopg_bytes(values)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(TEXTS)
def test_postgresql_reads_a_text_array_back(
    connection: psycopg.Connection[tuple[object, ...]], values: list[str]
) -> None:
    row = connection.execute(
        "SELECT %b::text[], cardinality(%b::text[])", (TextArray.of(values), TextArray.of(values))
    ).fetchone()
    assert row is not None
    assert row[0] == values
    assert row[1] == len(values)


@pytest.mark.parametrize(("kind", "type_name", "bits"), INT_ARRAYS)
def test_postgresql_reads_integer_arrays_back_to_their_bounds(
    connection: psycopg.Connection[tuple[object, ...]], kind: Any, type_name: str, bits: int
) -> None:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    for values in ([], [0], [low, -1, 0, 1, high], list(range(-300, 300, 7))):
        row = connection.execute(f"SELECT %b::{type_name}[]", (kind.of(values),)).fetchone()
        assert row is not None
        assert row[0] == values


@pytest.mark.parametrize(("kind", "type_name", "bits"), INT_ARRAYS)
def test_an_integer_out_of_the_types_range_is_a_database_error(
    kind: Any, type_name: str, bits: int
) -> None:
    # As PostgreSQL's own range check was: the store maps it to a StorageError.
    with pytest.raises(psycopg.DataError, match=f"out of range for int{bits}"):
        kind.of([0, 1 << (bits - 1)])
    with pytest.raises(psycopg.DataError, match="out of range"):
        kind.of([-(1 << (bits - 1)) - 1])
    with pytest.raises(psycopg.DataError, match="out of range"):
        kind.of([1 << 70])  # beyond any integer column


def test_a_non_string_is_never_sent_as_an_empty_string() -> None:
    with pytest.raises(TypeError):
        TextArray.of([None, None])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        TextArray.of(["a", None])  # type: ignore[list-item]


def test_an_event_the_integer_column_cannot_hold_is_a_storage_error_and_stores_nothing(
    postgres_database: str,
) -> None:
    store = PostgresStore(postgres_database)
    try:
        fine = StoredEvent("fine", "u1", "i1", EventType.VIEW, 1_000)
        with pytest.raises(StorageError, match="out of range for int32"):
            store.append_events([fine, fine._replace(event_id="big", position=2**31)])
        assert store.counts().events == 0
        assert store.append_events([fine]).accepted == (0,)
    finally:
        store.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1), max_size=40))
def test_a_bigint_array_holds_each_value_in_8_bytes_after_its_head(values: list[int]) -> None:
    # psycopg dumps Python ints as the narrowest type holding them all, ours always as
    # int8, so the bytes differ: decode ours by the wire format (PostgreSQL reads the
    # arrays back in the tests above).
    payload = BigintArray.of(values).payload
    ndim, flags, oid = (int.from_bytes(payload[i : i + 4], "big") for i in (0, 4, 8))
    assert (ndim, flags, oid) == (1 if values else 0, 0, 20)
    if values:
        assert int.from_bytes(payload[12:16], "big") == len(values)
        assert int.from_bytes(payload[16:20], "big") == 1  # lower bound
    body = payload[20:] if values else b""
    decoded = [
        int.from_bytes(body[12 * i + 4 : 12 * i + 12], "big", signed=True)
        for i in range(len(values))
    ]
    assert decoded == values
    assert all(int.from_bytes(body[12 * i : 12 * i + 4], "big") == 8 for i in range(len(values)))
