"""One-dimensional PostgreSQL arrays in the binary wire format, built at C speed.

The event store sends a batch as one array per column (server/store_postgres.py). psycopg's
own binary list dumper is pure Python per element (a struct pack and two list appends
each): it was the larger part of a Track's Python time under the store's counter lock,
which every writer waits for (benchmarks/RESULTS.md, "Track ingest"). These wrappers carry
values whose payload is built by a few whole-list calls: the text form joins
length-prefixed UTF-8 strings, the integer forms are one numpy record array.

Wire format (PostgreSQL's ``array_send``): ndim, has-null flag, element type oid, then per
dimension its length and lower bound, then each element as a 4-byte length and its bytes;
all big-endian. No element is NULL here (no column these arrays fill is nullable).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain
from typing import ClassVar, Self

import numpy as np
import psycopg
from psycopg import adapt, pq
from psycopg.adapt import AdaptersMap

_HEAD = struct.Struct(">iiIii")  # ndim, has null, element oid, length, lower bound
_EMPTY_HEAD = struct.Struct(">iiI")  # an empty array has no dimensions
_LENGTH = struct.Struct(">i")
_EMPTY_ELEMENT = _LENGTH.pack(0)  # an empty string: length 0, no bytes


class _BinaryArray:
    """An array's wire payload, built once; its class names the PostgreSQL type."""

    __slots__ = ("payload",)
    ELEMENT_OID: ClassVar[int]
    ARRAY_OID: ClassVar[int]

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    @classmethod
    def _head(cls, length: int) -> bytes:
        if length == 0:
            return _EMPTY_HEAD.pack(0, 0, cls.ELEMENT_OID)
        return _HEAD.pack(1, 0, cls.ELEMENT_OID, length, 1)


class TextArray(_BinaryArray):
    """``text[]``: each element its UTF-8 bytes."""

    __slots__ = ()
    ELEMENT_OID = 25
    ARRAY_OID = 1009

    @classmethod
    def of(cls, values: Sequence[str]) -> Self:
        # All empty (sessions, queries, ...: the common case). ``count`` rather than
        # ``any``: a non-string (None) must not pass as empty, nor an iterator be used up.
        if values.count("") == len(values):
            return cls(cls._head(len(values)) + _EMPTY_ELEMENT * len(values))
        encoded = list(map(str.encode, values))
        prefixes = map(_LENGTH.pack, map(len, encoded))
        body = b"".join(chain.from_iterable(zip(prefixes, encoded, strict=True)))
        return cls(cls._head(len(encoded)) + body)


class _IntArray(_BinaryArray):
    __slots__ = ()
    ELEMENT_TYPE: ClassVar[str]  # numpy's big-endian type of one element

    @classmethod
    def of(cls, values: Sequence[int]) -> Self:
        element = np.dtype(cls.ELEMENT_TYPE)
        limits = np.iinfo(element)
        try:
            wide = np.asarray(values, dtype=np.int64) if len(values) else np.zeros(0, np.int64)
        except OverflowError:
            wide = None
        if wide is None or (wide.size and (wide.min() < limits.min or wide.max() > limits.max)):
            # A database error, as PostgreSQL's own range check raised before: the store
            # reports it as a StorageError (store_common.errors_mapped).
            raise psycopg.DataError(f"a value out of range for {element.name}: {values!r:.80}")
        records = np.empty(wide.size, dtype=[("length", ">i4"), ("value", element)])
        records["length"] = element.itemsize
        records["value"] = wide
        return cls(cls._head(wide.size) + records.tobytes())


class SmallintArray(_IntArray):
    __slots__ = ()
    ELEMENT_OID = 21
    ARRAY_OID = 1005
    ELEMENT_TYPE = ">i2"


class IntegerArray(_IntArray):
    __slots__ = ()
    ELEMENT_OID = 23
    ARRAY_OID = 1007
    ELEMENT_TYPE = ">i4"


class BigintArray(_IntArray):
    __slots__ = ()
    ELEMENT_OID = 20
    ARRAY_OID = 1016
    ELEMENT_TYPE = ">i8"


class _PayloadDumper(adapt.Dumper):
    format = pq.Format.BINARY

    def dump(self, obj: _BinaryArray) -> bytes:
        return obj.payload


# One dumper class per array type, made once: its oid tells PostgreSQL the parameter's type.
_DUMPERS = {
    kind: type(f"{kind.__name__}Dumper", (_PayloadDumper,), {"oid": kind.ARRAY_OID})
    for kind in (TextArray, SmallintArray, IntegerArray, BigintArray)
}


def register(adapters: AdaptersMap) -> None:
    """Let a connection (or a context) send these arrays as binary parameters (``%b``)."""
    for kind, dumper in _DUMPERS.items():
        adapters.register_dumper(kind, dumper)


__all__ = ["BigintArray", "IntegerArray", "SmallintArray", "TextArray", "register"]
