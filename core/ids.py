"""Append-only mapping between external string ids and dense row indices."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError, UnknownIdError

MAX_ID_BYTES = 256
# Ids and feature tokens hold no C0 control character nor DEL: however they arrive (a
# request, a file, a device), so every store can hold them (PostgreSQL's text cannot hold
# NUL) and they print as they are. The client checks the same (client/_validation.py).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


def has_control_characters(text: str) -> bool:
    return CONTROL_CHARACTERS.search(text) is not None


def validate_id(value: str, field: str) -> str:
    """Return ``value`` if it is a usable id, else raise InvalidInputError naming ``field``."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: expected str, got {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{field}: must not be empty")
    if has_control_characters(value):
        raise InvalidInputError(f"{field}: must not contain control characters")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidInputError(f"{field}: longer than {MAX_ID_BYTES} bytes")
    return value


class IdMap:
    """Dense, append-only ``str -> int`` index. Indices never change once given."""

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for value in ids:
            if value in self._index:
                raise InvalidInputError(f"duplicate id {value!r}")
            self.add(value)

    def add(self, value: str) -> int:
        """Index of ``value``, appending it if new."""
        index = self._index.get(value)
        if index is None:
            index = len(self._ids)
            self._ids.append(value)
            self._index[value] = index
        return index

    def get(self, value: str) -> int | None:
        return self._index.get(value)

    def rows_of(self, values: Sequence[str]) -> list[int]:
        """The index of each of ``values`` (-1 for an unknown one), in C."""
        return list(map(self._index.get, values, itertools.repeat(-1, len(values))))

    def row_array(self, values: Iterable[str], count: int) -> npt.NDArray[np.int64]:
        """:meth:`rows_of` of ``count`` values straight into an array (no list between)."""
        return np.fromiter(
            map(self._index.get, values, itertools.repeat(-1, count)), np.int64, count=count
        )

    def index(self, value: str) -> int:
        """Index of a known id; UnknownIdError (a KeyError too) for an unknown one."""
        try:
            return self._index[value]
        except (KeyError, TypeError):  # TypeError: an unhashable value is no id either
            raise UnknownIdError(f"id {value!r} is not known") from None

    def indices(self, values: Iterable[str]) -> list[int]:
        """Indices of the known ids among ``values`` (unknown ones are skipped)."""
        lookup = self._index
        return [lookup[v] for v in values if v in lookup]

    def id_of(self, index: int) -> str:
        """The id at ``index``; UnknownIdError for an index outside ``[0, len)``."""
        if index < 0:  # a list would count from the end
            raise UnknownIdError(f"index {index} is outside [0, {len(self._ids)})")
        try:
            return self._ids[index]
        except IndexError:
            raise UnknownIdError(f"index {index} is outside [0, {len(self._ids)})") from None

    @property
    def ids(self) -> Sequence[str]:
        return self._ids

    def __contains__(self, value: object) -> bool:
        return value in self._index

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def copy(self) -> IdMap:
        clone = IdMap()
        clone._ids = list(self._ids)
        clone._index = dict(self._index)
        return clone
