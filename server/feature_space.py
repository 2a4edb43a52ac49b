"""LightFM feature matrices: identity plus metadata tokens, rows normalised.

All features of one side (users or items) live in one append-only vocabulary of names
``id:<entity id>`` and ``tok:<column=value>``; a new entity or token only ever appends a
column, so a trained model can grow without renumbering (needed for incremental training).
An entity's row has its identity at weight ``identity_weight`` and each of its tokens at
weight 1, then the row is scaled to sum to one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shelfrank.core.ids import IdMap

IDENTITY_PREFIX = "id:"
TOKEN_PREFIX = "tok:"


class FeatureSpace:
    """Entities, feature vocabulary and each entity's feature columns."""

    def __init__(self, identity_weight: float, use_tokens: bool = True) -> None:
        self.identity_weight = identity_weight
        self.use_tokens = use_tokens
        self.entities = IdMap()
        self.features = IdMap()
        self._token_columns: list[list[int]] = []

    def copy(self) -> FeatureSpace:
        clone = FeatureSpace(self.identity_weight, use_tokens=self.use_tokens)
        clone.entities = self.entities.copy()
        clone.features = self.features.copy()
        clone._token_columns = [list(columns) for columns in self._token_columns]
        return clone

    def add(self, entity: str, tokens: Sequence[str] = ()) -> int:
        """Index of ``entity``, adding it (with its identity column) if new. Tokens given
        for an existing entity are added to it."""
        row = self.entities.get(entity)
        if row is None:
            row = self.entities.add(entity)
            self.features.add(IDENTITY_PREFIX + entity)
            self._token_columns.append([])
        if self.use_tokens and tokens:
            columns = self._token_columns[row]
            for token in tokens:
                column = self.features.add(TOKEN_PREFIX + token)
                if column not in columns:
                    columns.append(column)
        return row

    def add_many(self, entities: Iterable[str]) -> npt.NDArray[np.int64]:
        return np.fromiter((self.add(e) for e in entities), dtype=np.int64)

    def tokens_of(self, row: int) -> list[str]:
        return [self.features.id_of(c)[len(TOKEN_PREFIX) :] for c in self._token_columns[row]]

    def token_vocabulary(self) -> tuple[IdMap, npt.NDArray[np.int64]]:
        """Metadata tokens (without prefix) and their feature columns."""
        names: list[str] = []
        columns: list[int] = []
        for column, name in enumerate(self.features):
            if name.startswith(TOKEN_PREFIX):
                names.append(name[len(TOKEN_PREFIX) :])
                columns.append(column)
        return IdMap(names), np.array(columns, dtype=np.int64)

    def identity_columns(self) -> npt.NDArray[np.int64]:
        return np.array(
            [self.features.index(IDENTITY_PREFIX + e) for e in self.entities], dtype=np.int64
        )

    def matrix(self) -> sp.csr_matrix:
        """The normalised (entities x features) matrix LightFM trains on."""
        n_rows = len(self.entities)
        identity = self.identity_columns()
        lengths = np.fromiter((len(c) for c in self._token_columns), dtype=np.int64, count=n_rows)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(lengths + 1, out=indptr[1:])
        indices = np.empty(indptr[-1], dtype=np.int32)
        data = np.empty(indptr[-1], dtype=np.float32)
        starts = indptr[:-1]
        indices[starts] = identity
        totals = self.identity_weight + lengths.astype(np.float64)
        data[starts] = (self.identity_weight / totals).astype(np.float32)
        for row, columns in enumerate(self._token_columns):
            if columns:
                start = starts[row] + 1
                indices[start : start + len(columns)] = columns
                data[start : start + len(columns)] = np.float32(1.0 / totals[row])
        return sp.csr_matrix((data, indices, indptr), shape=(n_rows, len(self.features)))

    def token_rows(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """CSR (indptr, token indices into :meth:`token_vocabulary`) per entity."""
        _vocabulary, columns = self.token_vocabulary()
        position = np.full(len(self.features), -1, dtype=np.int64)
        position[columns] = np.arange(columns.size)
        indptr = np.zeros(len(self.entities) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in self._token_columns], out=indptr[1:])
        flat = [position[c] for cols in self._token_columns for c in cols]
        return indptr, np.array(flat, dtype=np.int64)
