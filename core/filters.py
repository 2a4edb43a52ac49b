"""Business filters over item feature tokens, shared by the server and the edge.

A request may carry filters (each passes when the item has at least one of its tokens;
every filter must pass) and excluded tokens (an item with any of them is skipped). They
are evaluated exactly, as a boolean mask over item rows, before top-k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.ids import IdMap

BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.int64]


class FeatureIndex:
    """Inverted index: feature token -> item rows that carry it."""

    def __init__(self, vocabulary: IdMap, indptr: IndexArray, indices: IndexArray, n_items: int):
        if indptr.size != n_items + 1:
            raise InvalidInputError(f"indptr has {indptr.size} entries, expected {n_items + 1}")
        self.vocabulary = vocabulary
        self.n_items = n_items
        rows = np.repeat(np.arange(n_items, dtype=np.int64), np.diff(indptr))
        order = np.argsort(indices, kind="stable")
        self._rows = rows[order]
        counts = np.bincount(indices, minlength=len(vocabulary))
        self._starts = np.zeros(len(vocabulary) + 1, dtype=np.int64)
        np.cumsum(counts, out=self._starts[1:])
        # column prefix ("brand=") -> row -> its values' token columns; built on first use
        self._columns: dict[str, dict[int, tuple[int, ...]]] = {}

    def rows_with(self, token: str) -> IndexArray:
        column = self.vocabulary.get(token)
        if column is None:
            return np.empty(0, np.int64)
        return self._rows[self._starts[column] : self._starts[column + 1]]

    def column_values(self, prefix: str) -> dict[int, tuple[int, ...]]:
        """Row -> the vocabulary columns of its tokens starting with ``prefix`` (a column
        and '=', e.g. ``"brand="``); rows without any are absent. Built once per prefix."""
        known = self._columns.get(prefix)
        if known is not None:
            return known
        values: dict[int, list[int]] = {}
        for column, token in enumerate(self.vocabulary.ids):
            if token.startswith(prefix):
                for row in self._rows[self._starts[column] : self._starts[column + 1]].tolist():
                    values.setdefault(row, []).append(column)
        built = {row: tuple(columns) for row, columns in values.items()}
        self._columns[prefix] = built  # racing first users build the same; no harm
        return built

    def allowed(
        self, filters: Sequence[Sequence[str]] = (), exclude_tokens: Sequence[str] = ()
    ) -> BoolArray | None:
        """Mask of items passing every filter and carrying no excluded token; ``None``
        when nothing restricts (the caller can skip masking)."""
        if not filters and not exclude_tokens:
            return None
        mask = np.ones(self.n_items, dtype=bool)
        for any_of in filters:
            passing = np.zeros(self.n_items, dtype=bool)
            for token in any_of:
                passing[self.rows_with(token)] = True
            mask &= passing
        for token in exclude_tokens:
            mask[self.rows_with(token)] = False
        return mask
