"""Exact scoring of items for a user vector and top-k selection with filters.

score(user, item) = user_vector · item_vector + item_bias + user_bias, which is exactly
what ``LightFM.predict`` computes from the exported representations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.ids import IdMap
from shelfrank.core.pruned_scan import PrunedScan

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TopK:
    """Item row indices and their scores, best first."""

    indices: IndexArray
    scores: FloatArray

    def __len__(self) -> int:
        return int(self.indices.size)


def as_index_array(values: object | None) -> IndexArray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.int64).reshape(-1)
    return array


def top_k(
    scores: npt.NDArray[np.floating],
    k: int,
    *,
    exclude: IndexArray | None = None,
    candidates: IndexArray | None = None,
) -> TopK:
    """Best ``k`` rows of ``scores`` (ties broken by lower index), skipping ``exclude``.

    With ``candidates`` only those rows compete, ``scores`` still being indexed by row.
    ``scores`` is not modified.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise InvalidInputError(f"k: must be positive (an integer), got {k!r}")
    if candidates is not None:
        pool = np.unique(candidates)
        if exclude is not None and exclude.size:
            pool = pool[~np.isin(pool, exclude)]
        values = scores[pool].astype(np.float32, copy=False)
    else:
        pool = None
        values = scores.astype(np.float32, copy=False)
        if exclude is not None and exclude.size:
            values = values.copy()  # never modify the caller's scores
            values[exclude] = -np.inf
    chosen = _best_rows(values, k)
    rows = pool[chosen] if pool is not None else chosen
    return TopK(rows.astype(np.int64), values[chosen].astype(np.float32))


def _best_rows(values: FloatArray, k: int) -> IndexArray:
    """Rows of the ``k`` best finite values, best first, ties by lower row."""
    n = values.size
    if n > k:
        part = np.argpartition(values, n - k)[n - k :]
        best = values[part]
        if not np.isfinite(best).all():  # NaN or infinities among the best: slow but sure
            return _best_rows_careful(values, k)
        threshold = best.min()
        # Everything tied with the k-th value competes, so ties break by row, not by luck.
        chosen = np.flatnonzero(values >= threshold)
    else:
        chosen = np.arange(n)
    chosen = chosen[np.isfinite(values[chosen])]
    order = np.lexsort((chosen, -values[chosen]))[:k]
    return chosen[order].astype(np.int64)


def _best_rows_careful(values: FloatArray, k: int) -> IndexArray:
    finite = np.flatnonzero(np.isfinite(values))
    order = np.lexsort((finite, -values[finite]))[:k]
    return finite[order].astype(np.int64)


# Below this many items a numpy full scan is cheap enough that pruning does not pay. A
# compiled kernel prunes at any size: one call that releases the GIL instead of a few dozen
# numpy calls (MovieLens-100k's 1,682 items: an in-process Recommend 0.23 against 0.65 ms).
PRUNE_MIN_ITEMS = 20_000


def _wants_pruned_scan(items: int, kernel: PrunedKernel | None) -> bool:
    return items >= PRUNE_MIN_ITEMS or (kernel is not None and items > 0)


# Rows appended after an approximate index was built are scored exactly, up to this many.
_MAX_UNINDEXED = 20_000


class CandidateSearch(Protocol):
    """An approximate nearest-neighbour index over a table's rows (built by the server, e.g.
    :mod:`shelfrank.server.ann`): rows likely to score best, not necessarily the best."""

    @property
    def items(self) -> int: ...

    def search(self, user_vector: FloatArray, count: int, allowed: BoolArray | None) -> IndexArray:
        """Up to ``count`` distinct rows (allowed ones only, when ``allowed`` is given)."""
        ...


class PrunedKernel(Protocol):
    """Runs a :class:`PrunedScan` search in compiled code (the server's
    :mod:`shelfrank.server.compiled_search`): the same exact top k as the numpy search."""

    def top_k(
        self,
        scan: PrunedScan,
        vectors: FloatArray,
        biases: FloatArray,
        user_vector: FloatArray,
        user_bias: float,
        k: int,
        *,
        exclude: IndexArray | None = None,
        allowed: BoolArray | None = None,
    ) -> TopK: ...


class ScoringTable:
    """Item side of the serving model: vectors, biases and the item id map.

    Tables of ``PRUNE_MIN_ITEMS`` or more rows carry a :class:`PrunedScan` (built here, once),
    so ``recommend`` scores only the rows that can reach the top k; results are identical
    to a full scan."""

    def __init__(
        self,
        item_ids: IdMap,
        item_vectors: FloatArray,
        item_biases: FloatArray,
        *,
        pruned: PrunedScan | bool | None = True,
        approximate: CandidateSearch | None = None,
        kernel: PrunedKernel | None = None,
    ) -> None:
        if item_vectors.ndim != 2 or item_biases.ndim != 1:
            raise InvalidInputError("item_vectors must be 2-d and item_biases 1-d")
        if item_vectors.shape[0] != len(item_ids) or item_biases.shape[0] != len(item_ids):
            raise InvalidInputError(
                f"item table rows disagree: {len(item_ids)} ids, {item_vectors.shape[0]} vectors, "
                f"{item_biases.shape[0]} biases"
            )
        self.item_ids = item_ids
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.item_biases = np.ascontiguousarray(item_biases, dtype=np.float32)
        if pruned is True:
            pruned = (
                PrunedScan.build(self.item_vectors, self.item_biases)
                if _wants_pruned_scan(len(item_ids), kernel)
                else None
            )
        elif pruned is False:
            pruned = None
        elif pruned is not None and pruned.items != len(item_ids):
            raise InvalidInputError(
                f"pruned scan covers {pruned.items} rows, table has {len(item_ids)}"
            )
        self.pruned: PrunedScan | None = pruned
        if approximate is not None and approximate.items > len(item_ids):
            raise InvalidInputError(
                f"approximate index covers {approximate.items} rows, table has {len(item_ids)}"
            )
        self._norms: FloatArray | None = None
        # When set, recommend asks it for candidates instead of searching exactly. It covers
        # the first ``approximate.items`` rows; rows appended since are scored exactly.
        self.approximate = approximate
        # When set, the pruned search runs in it (compiled, GIL released) instead of numpy.
        self.kernel = kernel

    def attach_kernel(self, kernel: PrunedKernel) -> None:
        """Search in ``kernel`` from now on (call before the table is published). It searches
        a pruned scan, so one is built here if the table was too small to carry one."""
        if self.pruned is None and _wants_pruned_scan(len(self), kernel):
            self.pruned = PrunedScan.build(self.item_vectors, self.item_biases)
        self.kernel = kernel

    def with_rows_appended(
        self, item_ids: IdMap, item_vectors: FloatArray, item_biases: FloatArray
    ) -> ScoringTable:
        """A new table whose first rows are this table's and whose rest are the given ones
        (``item_ids`` names all rows). The pruned scan is extended, not rebuilt."""
        n = len(self)
        if len(item_ids) != n + item_vectors.shape[0]:
            raise InvalidInputError(
                "item_ids must name the existing rows and then the appended ones"
            )
        vectors = np.vstack([self.item_vectors, item_vectors])
        biases = np.concatenate([self.item_biases, item_biases])
        extended: PrunedScan | bool = (
            True  # decide afresh: the table may have grown past PRUNE_MIN_ITEMS
            if self.pruned is None
            else self.pruned.extended(
                np.asarray(item_vectors, np.float32), np.asarray(item_biases, np.float32)
            )
        )
        return ScoringTable(
            item_ids,
            vectors,
            biases,
            pruned=extended,
            approximate=self.approximate,
            kernel=self.kernel,
        )

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    @property
    def norms(self) -> FloatArray:
        """Vector norms (zeros read as 1), computed once: item-to-item similarity uses them."""
        norms = self._norms
        if norms is None:  # racing first readers compute the same array; no harm
            norms = np.linalg.norm(self.item_vectors, axis=1).astype(np.float32)
            norms[norms == 0] = 1.0
            self._norms = norms
        return norms

    def __len__(self) -> int:
        return len(self.item_ids)

    def scores(
        self, user_vector: FloatArray, user_bias: float = 0.0, rows: IndexArray | None = None
    ) -> FloatArray:
        """Scores of all items, or of ``rows`` only, for one user."""
        if rows is None:
            out = self.item_vectors @ user_vector
            out += self.item_biases
        else:
            out = self.item_vectors[rows] @ user_vector
            out += self.item_biases[rows]
        out += np.float32(user_bias)
        return out

    def _approximate(
        self,
        user_vector: FloatArray,
        user_bias: float,
        k: int,
        exclude: IndexArray | None,
        allowed: BoolArray | None,
    ) -> TopK | None:
        """Top k among the index's candidates, scored exactly; filters and exclusions hold
        exactly. None when the candidates cannot fill k (the caller then searches exactly)."""
        if self.approximate is None:
            return None
        excluded = exclude.size if exclude is not None else 0
        # Over-fetch by the exclusions: they may all be among the nearest.
        rows = self.approximate.search(user_vector, k + excluded, allowed)
        unindexed = len(self) - self.approximate.items
        if unindexed > _MAX_UNINDEXED:
            return None  # too many rows added since the index was built: search exactly
        if unindexed:
            rows = np.concatenate([rows, np.arange(self.approximate.items, len(self))])
        rows = np.unique(rows)
        if exclude is not None and exclude.size:
            rows = rows[~np.isin(rows, exclude)]
        if allowed is not None:
            rows = rows[allowed[rows]]
        if rows.size < k:
            return None
        best = top_k(self.scores(user_vector, user_bias, rows=rows), k)
        return TopK(rows[best.indices], best.scores)

    def scores_many(self, user_vectors: FloatArray, user_biases: FloatArray) -> FloatArray:
        """Scores for a batch of users: shape (users, items)."""
        out = user_vectors @ self.item_vectors.T
        out += self.item_biases[None, :]
        out += user_biases[:, None]
        return out

    def recommend(
        self,
        user_vector: FloatArray,
        user_bias: float,
        k: int,
        *,
        exclude: IndexArray | None = None,
        candidates: IndexArray | None = None,
        allowed: BoolArray | None = None,
    ) -> TopK:
        """Top k rows for a user, skipping ``exclude``. Only ``candidates`` (row indices) or
        the rows where ``allowed`` (a mask, cheaper when the caller has one) is true compete."""
        n = len(self)
        if candidates is not None and allowed is not None:
            raise InvalidInputError("candidates and allowed: give at most one")
        if candidates is not None:
            competing = int(candidates.size)
        elif allowed is not None:
            competing = int(np.count_nonzero(allowed))
        else:
            competing = n
        # Indexed searches pay off unless a filter leaves few rows; then score those directly.
        if competing > n // 8 and (self.approximate is not None or self.pruned is not None):
            if candidates is not None:
                allowed = np.zeros(n, np.bool_)
                allowed[candidates] = True
            found = self._approximate(user_vector, user_bias, k, exclude, allowed)
            if found is not None:
                return found
            if self.pruned is not None and self.kernel is not None:
                return self.kernel.top_k(
                    self.pruned,
                    self.item_vectors,
                    self.item_biases,
                    user_vector,
                    user_bias,
                    k,
                    exclude=exclude,
                    allowed=allowed,
                )
            if self.pruned is not None:
                rows, scores = self.pruned.top_candidates(
                    self.item_vectors,
                    self.item_biases,
                    user_vector,
                    k,
                    exclude=exclude,
                    allowed=allowed,
                )
                scores += np.float32(user_bias)
                best = top_k(scores, k)
                return TopK(rows[best.indices], best.scores)
        if allowed is not None:
            candidates = np.flatnonzero(allowed)
        if candidates is not None:
            pool = np.unique(candidates)
            sub = self.scores(user_vector, user_bias, rows=pool)
            local_exclude = None
            if exclude is not None and exclude.size:
                local_exclude = np.flatnonzero(np.isin(pool, exclude))
            best = top_k(sub, k, exclude=local_exclude)
            return TopK(pool[best.indices], best.scores)
        return top_k(self.scores(user_vector, user_bias), k, exclude=exclude)
