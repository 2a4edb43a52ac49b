"""Fuzzing the file readers (issue 6): any bytes in a CSV, JSONL or MovieLens file either
parse (bad rows counted in the report) or, in strict mode, raise DataFormatError naming the
file and line. Nothing else escapes: no UnicodeDecodeError, IndexError or bare ValueError."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.errors import DataFormatError
from shelfrank.datasets import read_features, read_interactions
from shelfrank.datasets.movielens import read_ratings

HEADERS = [
    b"user_id,item_id,event_type,timestamp,weight,event_id\n",
    b"user_id,item_id,event_type,timestamp\n",
    b"item_id,category,tags\n",
    b"",
]
FRAGMENTS = st.sampled_from(
    [
        b"u1",
        b"i1",
        b"purchase",
        b"view",
        b"1700000000",
        b"-5",
        b"nan",
        b"inf",
        b"1e999",
        b",",
        b"\n",
        b"\r\n",
        b'"',
        b'""',
        b"\x00",
        b"\xff\xfe",
        b"\xc3\x28",
        b"{",
        b"}",
        b'{"user_id": "u", "item_id": "i", "event_type": "view"}',
        b"[1]",
        b"null",
        b"\t",
        b"tags=a",
        b"|",
        b"=",
        b"category",
    ]
)
contents = st.tuples(
    st.sampled_from(HEADERS),
    st.lists(st.one_of(FRAGMENTS, st.binary(max_size=12)), max_size=40).map(b"".join),
).map(lambda parts: parts[0] + parts[1])

Reader = Callable[[Path, bool], Any]
READERS: list[tuple[str, Reader]] = [
    (".csv", lambda path, strict: read_interactions(path, strict=strict)),
    (".jsonl", lambda path, strict: read_interactions(path, strict=strict)),
    (".csv", lambda path, strict: read_features(path, "item_id", strict=strict)),
    (".data", lambda path, strict: read_ratings(path, strict=strict)),
]


@settings(max_examples=300, deadline=None)
@given(data=contents, which=st.integers(0, len(READERS) - 1), strict=st.booleans())
def test_readers_never_crash_on_arbitrary_bytes(data: bytes, which: int, strict: bool) -> None:
    suffix, read = READERS[which]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        message = str(path)
        try:
            read(path, strict)
        except DataFormatError as error:
            message = str(error)
        assert str(path) in message  # a refusal names the file (and the line, where there is one)
