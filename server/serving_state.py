"""An immutable snapshot of everything a request reads: model, filter index, metadata.

Requests take the current snapshot once and use it to the end, so a model swap or a
catalogue upsert (which publish a new snapshot) never shows a request a half-applied
state. Snapshots are built off to the side and published by a single reference
assignment (atomic in CPython).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from shelfrank.core.filters import FeatureIndex
from shelfrank.core.representation import TokenEmbeddings
from shelfrank.core.scoring import ScoringTable
from shelfrank.core.serving import ServingModel, SparseRows
from shelfrank.server.config import TrainConfig


@dataclass(frozen=True)
class ServingState:
    model: ServingModel
    config: TrainConfig
    features: FeatureIndex
    model_version: str
    trained_at_ms: int
    # Store sequence number up to which events are inside the model; newer ones are
    # folded in at request time.
    watermark_seq: int
    # The store's latest erasure when the model's events were read: a user erased after
    # it (EventStore.user_view's latest_erasure) is not served the trained vector.
    erasures_through: int = 0
    # The store's catalogue revision the item table reflects (EventStore.catalogue_changes).
    catalogue_through: int = 0
    # Item rows the model was trained with; rows after them are catalogue items added
    # since (cold start: their vectors come from their tokens).
    trained_items: int = -1
    # False before the first model (server/bootstrap.py): items are ranked by popularity
    # over the store's events, counted through ``watermark_seq``.
    trained: bool = True
    # Per item row: False when made unavailable (EventStore.set_availability); None: all
    # available. Never recommended, still in the table (its history still trains).
    available: npt.NDArray[np.bool_] | None = field(default=None, compare=False)
    # Per item row: when the catalogue first stored it (unix ms; 0: unknown).
    added_ms: npt.NDArray[np.int64] | None = field(default=None, compare=False)
    # The store's item key -> item row (-1: not known here), learned from the catalogue
    # entries applied (CatalogueEntry.key): a flip finds its rows by one gather. Never
    # written in place: a state that learns keys gets a copy.
    key_rows: npt.NDArray[np.int64] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.trained_items < 0:
            object.__setattr__(self, "trained_items", len(self.model.item_ids))

    @property
    def snapshot_version(self) -> str:
        """Names the item table by what it is made of (the model and the catalogue
        revision), so every process serving the same model and catalogue names it alike:
        a device may sync against any replica."""
        version = f"{self.model_version}.c{self.catalogue_through}"
        # Before the first model the popularity moves with every event counted, and with
        # every erasure (an erased user's events leave the counts; the newest event, and
        # so the watermark, may stay): one name must never stand for two tables.
        if self.trained:
            return version
        return f"{version}.w{self.watermark_seq}.e{self.erasures_through}"

    def uses_trained_vector(self, latest_erasure: int) -> bool:
        """Whether a user whose latest erasure is ``latest_erasure`` may be served the
        model's trained vector (not when erased after the model's events were read)."""
        return latest_erasure <= self.erasures_through

    @cached_property
    def new_items(self) -> npt.NDArray[np.bool_]:
        """Rows that may take exploration slots: items the model was not trained with
        and items without any interaction in its training data."""
        new = self.model.item_popularity <= 0
        new[self.trained_items :] = True
        return new

    def with_catalogue(
        self,
        catalogue: Mapping[str, Sequence[str]] | Iterable[tuple[Any, ...]],
        *,
        revision: int | None = None,
    ) -> ServingState:
        """This state with every catalogue item present with exactly the given tokens
        (only the differences are applied; the catalogue may be streamed), reflecting the
        store's catalogue ``revision`` when given. Entries may carry availability and
        when the item was added (``CatalogueEntry``): a flip of availability alone copies
        one flag per item, not the item table."""
        entries = list(catalogue.items() if isinstance(catalogue, Mapping) else catalogue)
        if not entries:
            return self if revision is None else replace(self, catalogue_through=revision)
        # Column by column, in C where it can be: a flip of 10,000 items must cost a small
        # share of a rebuild.
        # itemgetter over the entries allocates nothing per entry (zip(*entries) makes an
        # iterator per entry, and enough allocations start a full GC over the heap).
        width = len(entries[0])

        def column(i: int, dtype: type[np.generic]) -> npt.NDArray[Any]:
            # Straight from the entries into an array: no intermediate list.
            return np.fromiter(map(itemgetter(i), entries), dtype, count=len(entries))

        keys = column(5, np.int64) if width > 5 else None
        rows = self._rows_of(entries, keys)
        known = rows >= 0
        # Entries whose tokens were written at or before the revision this table reflects
        # are unchanged: only their availability moved, no tokens to compare.
        unchanged = known.copy()
        if width > 4:
            written = column(4, np.int64)
            unchanged &= (written > 0) & (written <= self.catalogue_through)
        else:
            unchanged[:] = False
        changes = {
            entries[i][0]: entries[i][1]
            for i in np.flatnonzero(~unchanged).tolist()
            if not known[i] or self.item_tokens(entries[i][0]) != tuple(entries[i][1])
        }
        state = self.with_items(changes) if changes else self
        if not known.all():  # items added since: their rows exist now
            ids = map(itemgetter(0), entries)
            rows = state.model.item_ids.row_array(ids, len(entries))
        if width > 2:  # CatalogueEntry: availability and add times too
            state = state._with_flags(
                rows,
                column(2, np.bool_),
                column(3, np.int64) if width > 3 else np.zeros(len(rows), np.int64),
            )
        if keys is not None:
            state = state._with_keys(keys, rows)
        return state if revision is None else replace(state, catalogue_through=revision)

    def _rows_of(
        self, entries: Sequence[tuple[Any, ...]], keys: npt.NDArray[np.int64] | None
    ) -> npt.NDArray[np.int64]:
        """Each entry's item row (-1: not in the table): by its key where this state knows
        it, else by its id (a dictionary lookup per id: 10,000 of them cost a flip more
        than everything else together)."""
        ids = self.model.item_ids
        table = self.key_rows
        if keys is None or table is None:
            return ids.row_array(map(itemgetter(0), entries), len(entries))
        rows = np.full(keys.size, -1, np.int64)
        inside = (keys > 0) & (keys < table.size)
        rows[inside] = table[keys[inside]]
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            rows[missing] = ids.row_array((entries[i][0] for i in missing.tolist()), missing.size)
        return rows

    def _with_keys(self, keys: npt.NDArray[np.int64], rows: npt.NDArray[np.int64]) -> ServingState:
        """This state knowing the rows of ``keys`` (a copy only when something is new)."""
        valid = (keys > 0) & (rows >= 0)
        keys, rows = keys[valid], rows[valid]
        if not keys.size:
            return self
        table = self.key_rows
        size = int(keys.max()) + 1
        if table is not None and size <= table.size and np.array_equal(table[keys], rows):
            return self  # nothing new (a flip of known items)
        grown = np.full(max(size, 0 if table is None else table.size), -1, np.int64)
        if table is not None:
            grown[: table.size] = table
        grown[keys] = rows
        return replace(self, key_rows=grown)

    def _with_flags(
        self,
        rows: npt.NDArray[np.int64],
        new_available: npt.NDArray[np.bool_],
        new_added: npt.NDArray[np.int64],
    ) -> ServingState:
        n = len(self.model.item_ids)
        available = _grown(self.available, n, True)
        added = _grown(self.added_ms, n, 0)
        if available is None and bool(new_available.all()):
            pass  # every item stays available: no mask to copy or consult
        else:
            available = np.ones(n, np.bool_) if available is None else available.copy()
            available[rows] = new_available
        if added is None and not new_added.any():
            pass
        else:
            added = np.zeros(n, np.int64) if added is None else added.copy()
            added[rows] = new_added
        if available is not None and available.all():
            available = None
        return replace(self, available=available, added_ms=added)

    @classmethod
    def build(
        cls, model: ServingModel, config: TrainConfig, *, trained_at_ms: int, watermark_seq: int
    ) -> ServingState:
        return cls(
            model, config, _feature_index(model), model.model_version, trained_at_ms, watermark_seq
        )

    def item_tokens(self, item_id: str) -> tuple[str, ...]:
        vocabulary = self.model.item_token_embeddings.vocabulary
        row = self.model.item_ids.index(item_id)
        return tuple(vocabulary.id_of(int(c)) for c in self.model.item_tokens.row(row))

    def with_items(self, items: Mapping[str, Sequence[str]]) -> ServingState:
        """A new snapshot where ``items`` (id -> tokens) exist with these tokens. Items the
        model was not trained with get their vector from their tokens (cold start), also
        when their tokens change again; trained items keep their trained vector and only
        change tokens (filters). So the table depends only on the model and the final
        tokens, not on the order the changes came in. Cost: one copy of the item table."""
        model = self.model
        old_vocab = model.item_token_embeddings.vocabulary
        vocab = old_vocab.copy()
        for tokens in items.values():
            for token in tokens:
                vocab.add(token)
        grown = len(vocab) - len(old_vocab)
        embeddings = TokenEmbeddings(
            vocab,
            np.vstack(
                [
                    model.item_token_embeddings.embeddings,
                    np.zeros((grown, model.items.dim), np.float32),
                ]
            ),
            np.concatenate([model.item_token_embeddings.biases, np.zeros(grown, np.float32)]),
            identity_weight=model.item_token_embeddings.identity_weight,
            weighting=model.item_token_embeddings.weighting,
        )
        item_ids = model.item_ids.copy()
        token_rows: list[list[int]] = [
            model.item_tokens.row(i).tolist() for i in range(len(item_ids))
        ]
        vectors = [model.items.item_vectors]
        biases = [model.items.item_biases]
        recomposed: dict[int, tuple[np.ndarray, float]] = {}
        for item_id, tokens in items.items():
            columns = sorted({vocab.index(t) for t in tokens})
            row = item_ids.get(item_id)
            if row is None:
                item_ids.add(item_id)
                token_rows.append(columns)
                vector, bias = model.item_token_embeddings.compose(tokens)
                vectors.append(vector[None, :])
                biases.append(np.array([bias], np.float32))
            else:
                token_rows[row] = columns
                if row >= self.trained_items:  # a cold item's vector follows its tokens
                    recomposed[row] = model.item_token_embeddings.compose(tokens)
        added = len(item_ids) - len(model.item_ids)
        items_table = _recomposed(model.items, recomposed) if recomposed else model.items
        # Appending keeps the table's search structures (pruned scan extended, not rebuilt;
        # approximate index and compiled kernel carried over).
        if added:
            items_table = items_table.with_rows_appended(
                item_ids, np.vstack(vectors[1:]), np.concatenate(biases[1:])
            )
        indptr = np.zeros(len(item_ids) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in token_rows], out=indptr[1:])
        indices = np.array([c for r in token_rows for c in r], dtype=np.int64)
        new_model = replace(
            model,
            items=items_table,
            item_tokens=SparseRows(indptr, indices),
            item_token_embeddings=embeddings,
            item_popularity=np.concatenate([model.item_popularity, np.zeros(added, np.float32)]),
            signals=None if model.signals is None else model.signals.with_items_appended(added),
        )
        n = len(item_ids)
        return replace(
            self,
            model=new_model,
            features=_feature_index(new_model),
            available=_grown(self.available, n, True),
            added_ms=_grown(self.added_ms, n, 0),
        )


def _grown(values: npt.NDArray[Any] | None, n: int, fill: bool | int) -> npt.NDArray[Any] | None:
    """Per-row values extended to ``n`` rows with ``fill`` (items appended since)."""
    if values is None or values.size == n:
        return values
    extra = np.full(n - values.size, fill, dtype=values.dtype)
    return np.concatenate([values, extra])


def _recomposed(table: ScoringTable, rows: Mapping[int, tuple[np.ndarray, float]]) -> ScoringTable:
    """``table`` with new vectors and biases in ``rows`` (cold items only: an approximate
    index covers trained rows, so it stays valid; the pruned scan is rebuilt)."""
    vectors, biases = table.item_vectors.copy(), table.item_biases.copy()
    for row, (vector, bias) in rows.items():
        vectors[row], biases[row] = vector, bias
    return ScoringTable(
        table.item_ids, vectors, biases, approximate=table.approximate, kernel=table.kernel
    )


def _feature_index(model: ServingModel) -> FeatureIndex:
    return FeatureIndex(
        model.item_token_embeddings.vocabulary,
        model.item_tokens.indptr,
        model.item_tokens.indices,
        len(model.items),
    )


__all__ = ["ServingState"]
