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

from shelfrank.server import pg_arrays
from shelfrank.server.pg_arrays import BigintArray, IntegerArray, SmallintArray, TextArray

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
def test_an_integer_out_of_the_types_range_is_refused(kind: Any, type_name: str, bits: int) -> None:
    with pytest.raises(OverflowError, match="out of range"):
        kind.of([0, 1 << (bits - 1)])
    with pytest.raises(OverflowError, match="out of range"):
        kind.of([-(1 << (bits - 1)) - 1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1), max_size=40))
def test_a_bigint_array_is_the_bytes_psycopg_writes_as_int8(values: list[int]) -> None:
    # psycopg dumps Python ints as the narrowest type holding them all; ours is always
    # int8. Same elements once PostgreSQL reads them: compare after decoding ours.
    payload = BigintArray.of(values).payload
    assert int.from_bytes(payload[8:12], "big") == 20  # element oid int8
    body = payload[20:] if values else b""
    decoded = [
        int.from_bytes(body[12 * i + 4 : 12 * i + 12], "big", signed=True)
        for i in range(len(values))
    ]
    assert decoded == values
    assert all(int.from_bytes(body[12 * i : 12 * i + 4], "big") == 8 for i in range(len(values)))
