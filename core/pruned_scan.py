"""Exact top-k that reads only the parts of the item table that can reach the top.

Scoring every item reads the whole float32 table per request (25.6 MB at 100k x 64),
which is memory-bound. Trained LightFM item tables are close to low-rank (on ml-100k the
top 12 of 65 principal directions of [vector, bias] carry 99% of the energy), so:

- with ``a_i = [v_i, b_i]`` and ``q = [u, 1]``, ``a_i . q`` is the score without the user
  bias (a per-request constant, irrelevant to ranking);
- for an orthonormal basis ``W`` (d+1 x r): ``a_i . q = p_i . (W'q) + a_perp . q_perp`` with
  ``p_i = W'a_i`` and ``|a_perp . q_perp| <= rho_i ||q_perp||``, ``rho_i = ||a_i - W p_i||``;
- items are grouped into leaves of at most ``leaf_size`` by median splits of ``p`` along
  its widest coordinate (a k-d tree's leaves); each leaf keeps the box of its ``p`` and
  its largest ``rho``, which bound every score in the leaf from above in O(r).

A request bounds all leaves (one small matrix-vector product), takes a threshold from the
exact scores of the items in the best-bounded leaves, and scores exactly only the items of
leaves whose bound reaches it and whose own bound reaches it. Nothing is approximate: an
item is skipped only when it cannot reach the top k (ties included). On a table that is not
low-rank the search just reads more of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Float32 rounding in the bounds is far below this, relative to ||a|| ||q||.
SLACK = 1e-5
# Leaves whose items give the first threshold (then 16x as many if too few are allowed).
SEED_LEAVES = 16


@dataclass(frozen=True)
class PrunedScan:
    """Leaf boxes over a projection of an item table; see the module docstring."""

    basis: FloatArray  # (dim + 1, rank), orthonormal columns
    order: IndexArray  # item rows, leaf by leaf
    offsets: IndexArray  # leaf j holds order[offsets[j]:offsets[j + 1]]
    low: FloatArray  # (leaves, rank) box corners of the projections
    high: FloatArray
    residual: FloatArray  # (leaves,) largest residual norm in the leaf
    projected: FloatArray  # (items, rank) p_i in leaf order (a leaf is contiguous)
    item_residual: FloatArray  # (items,) rho_i in leaf order
    max_norm: float  # largest ||a_i||, for the rounding slack

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    @property
    def items(self) -> int:
        return int(self.order.size)

    @property
    def leaves(self) -> int:
        return int(self.residual.size)

    @classmethod
    def build(
        cls,
        vectors: FloatArray,
        biases: FloatArray,
        *,
        energy: float = 0.99,
        leaf_size: int = 64,
    ) -> PrunedScan | None:
        """The smallest basis keeping ``energy`` of the table; None when that needs more than
        half the dimensions (bounds would then prune too little to pay for themselves)."""
        if not 0.0 < energy <= 1.0:
            raise InvalidInputError(f"energy: must be in (0, 1], got {energy}")
        if leaf_size < 1:
            raise InvalidInputError(f"leaf_size: must be positive, got {leaf_size}")
        dim = vectors.shape[1] + 1
        eigenvalues, eigenvectors = np.linalg.eigh(_gram(vectors, biases))
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.clip(eigenvalues[order], 0.0, None)
        total = float(eigenvalues.sum())
        if total <= 0.0:
            return None
        captured = np.cumsum(eigenvalues) / total
        rank = int(np.searchsorted(captured, energy) + 1)
        if rank > dim // 2:
            return None
        basis = np.ascontiguousarray(eigenvectors[:, order[:rank]], dtype=np.float32)
        return _leaves(vectors, biases, basis, leaf_size, first_row=0)

    def extended(self, vectors: FloatArray, biases: FloatArray) -> PrunedScan:
        """This scan with rows appended (numbered after the existing ones), in leaves of their
        own. The basis is kept: any orthonormal basis gives valid bounds."""
        leaf_size = int(np.diff(self.offsets).max()) if self.leaves else 64
        added = _leaves(vectors, biases, self.basis, leaf_size, first_row=self.items)
        return PrunedScan(
            self.basis,
            np.concatenate([self.order, added.order]),
            np.concatenate([self.offsets, added.offsets[1:] + self.items]),
            np.vstack([self.low, added.low]),
            np.vstack([self.high, added.high]),
            np.concatenate([self.residual, added.residual]),
            np.vstack([self.projected, added.projected]),
            np.concatenate([self.item_residual, added.item_residual]),
            max(self.max_norm, added.max_norm),
        )

    @cached_property
    def bound_matrix(self) -> FloatArray:
        """``[high | low | residual | 1]`` per leaf: a leaf's bound is one row of a product.
        Stored column by column (its transpose is C-contiguous), so a compiled loop over the
        leaves reads memory in order."""
        ones = np.ones((self.leaves, 1), np.float32)
        return np.asfortranarray(
            np.hstack([self.high, self.low, self.residual[:, None], ones]), dtype=np.float32
        )

    def _query(self, user_vector: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The query's projection, and its bound vector ``[max(p, 0), min(p, 0), |q_perp|,
        slack]`` (the slack absorbs float32 rounding so a bound is never below a score)."""
        dim = user_vector.size
        query = np.empty(dim + 1, np.float32)
        query[:dim] = user_vector
        query[dim] = 1.0
        projected = query @ self.basis
        residual = np.linalg.norm(query - self.basis @ projected)
        slack = SLACK * self.max_norm * float(np.linalg.norm(query))
        rank = projected.size
        bound_query = np.empty(2 * rank + 2, np.float32)
        np.maximum(projected, 0, out=bound_query[:rank])
        np.minimum(projected, 0, out=bound_query[rank : 2 * rank])
        bound_query[2 * rank] = residual
        bound_query[2 * rank + 1] = slack
        return projected, bound_query

    def _positions(self, leaves: IndexArray) -> IndexArray:
        """Leaf-order positions of all items of ``leaves``."""
        starts = self.offsets[leaves]
        sizes = self.offsets[leaves + 1] - starts
        total = int(sizes.sum())
        firsts = np.cumsum(sizes) - sizes
        return np.repeat(starts - firsts, sizes) + np.arange(total, dtype=np.int64)

    def top_candidates(
        self,
        vectors: FloatArray,
        biases: FloatArray,
        user_vector: FloatArray,
        k: int,
        *,
        exclude: IndexArray | None = None,
        allowed: BoolArray | None = None,
    ) -> tuple[IndexArray, FloatArray]:
        """Ascending rows and their exact ``v . u + b``: every allowed, non-excluded row that
        can be in the top ``k`` (ties included), and possibly some that cannot.

        Two vectorised passes (few numpy calls: each one lets other request threads take
        the GIL, so fewer calls serve concurrent requests better than a tighter loop):

        1. a threshold ``t`` no higher than the true k-th best score: the k-th best exact
           score among the allowed, non-excluded items of the leaves with the highest bounds;
        2. every leaf whose bound reaches ``t``; in them every allowed item whose own bound
           reaches ``t`` and that is not excluded is scored exactly.
        """
        projected, bound_query = self._query(user_vector)
        bounds: FloatArray = self.bound_matrix @ bound_query
        excluded = np.unique(exclude) if exclude is not None and exclude.size else None

        threshold = -np.inf
        for seeds in (SEED_LEAVES, 16 * SEED_LEAVES):
            rows = self._rows_of(_best_first(bounds, seeds), allowed, excluded)[0]
            if rows.size >= k:
                seed_scores = vectors[rows] @ user_vector + biases[rows]
                threshold = float(np.partition(seed_scores, rows.size - k)[rows.size - k])
                break
        leaves = np.flatnonzero(bounds >= threshold)
        rows, positions = self._rows_of(leaves, allowed, None)
        rank = projected.size
        upper = self.projected[positions] @ projected
        upper += self.item_residual[positions] * bound_query[2 * rank]
        upper += bound_query[2 * rank + 1]
        rows = np.sort(rows[upper >= threshold])
        if excluded is not None:  # only now: few rows are left to test
            rows = rows[~in_sorted(rows, excluded)]
        scores = vectors[rows] @ user_vector + biases[rows]
        return rows.astype(np.int64), scores.astype(np.float32)

    def _rows_of(
        self, leaves: IndexArray, allowed: BoolArray | None, excluded: IndexArray | None
    ) -> tuple[IndexArray, IndexArray]:
        """Rows of ``leaves`` that are allowed and not excluded, and their leaf positions."""
        positions = self._positions(leaves)
        rows = self.order[positions]
        if allowed is not None or excluded is not None:
            chosen = np.ones(rows.size, np.bool_) if allowed is None else allowed[rows]
            if excluded is not None:
                chosen &= ~in_sorted(rows, excluded)
            positions, rows = positions[chosen], rows[chosen]
        return rows, positions


def in_sorted(rows: IndexArray, sorted_values: IndexArray) -> BoolArray:
    """``np.isin(rows, sorted_values)`` for ascending values, without isin's overhead (its
    sorting on every call)."""
    if sorted_values.size == 0:
        return np.zeros(rows.size, np.bool_)
    at = np.minimum(np.searchsorted(sorted_values, rows), sorted_values.size - 1)
    found: BoolArray = sorted_values[at] == rows
    return found


def _best_first(bounds: FloatArray, count: int) -> IndexArray:
    """The ``count`` leaves with the highest bounds (all when count >= size)."""
    if count >= bounds.size:
        return np.arange(bounds.size, dtype=np.int64)
    return np.argpartition(-bounds, count)[:count].astype(np.int64)


def _leaves(
    vectors: FloatArray, biases: FloatArray, basis: FloatArray, leaf_size: int, first_row: int
) -> PrunedScan:
    projected, residual, max_norm = _project(vectors, biases, basis)
    segments = [np.arange(projected.shape[0], dtype=np.int64)]
    finished: list[IndexArray] = []
    while segments:
        segment = segments.pop()
        if segment.size <= leaf_size:
            finished.append(segment)
            continue
        points = projected[segment]
        widest = int(np.argmax(points.max(axis=0) - points.min(axis=0)))
        ranked = segment[np.argsort(points[:, widest], kind="stable")]
        half = ranked.size // 2
        segments.extend([ranked[half:], ranked[:half]])
    finished = [leaf for leaf in finished if leaf.size]
    rank = basis.shape[1]
    low = np.empty((len(finished), rank), np.float32)
    high = np.empty((len(finished), rank), np.float32)
    worst = np.empty(len(finished), np.float32)
    for j, leaf in enumerate(finished):
        low[j], high[j] = projected[leaf].min(axis=0), projected[leaf].max(axis=0)
        worst[j] = residual[leaf].max()
    sizes = np.array([leaf.size for leaf in finished], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    local = np.concatenate(finished) if finished else np.empty(0, np.int64)
    return PrunedScan(
        basis,
        (local + first_row).astype(np.int64),
        offsets,
        low,
        high,
        worst,
        np.ascontiguousarray(projected[local]),
        residual[local],
        max_norm,
    )


def _gram(vectors: FloatArray, biases: FloatArray) -> npt.NDArray[np.float64]:
    dim = vectors.shape[1]
    gram = np.zeros((dim + 1, dim + 1))
    for start in range(0, vectors.shape[0], 65_536):
        block = _augmented(vectors[start : start + 65_536], biases[start : start + 65_536])
        wide = block.astype(np.float64)
        gram += wide.T @ wide
    return gram


def _augmented(vectors: FloatArray, biases: FloatArray) -> FloatArray:
    return np.hstack([vectors, biases[:, None]]).astype(np.float32, copy=False)


def _project(
    vectors: FloatArray, biases: FloatArray, basis: FloatArray
) -> tuple[FloatArray, FloatArray, float]:
    """Projections, residual norms (rounded up) and the largest row norm."""
    n, rank = vectors.shape[0], basis.shape[1]
    projected = np.empty((n, rank), np.float32)
    residual = np.empty(n, np.float32)
    max_norm = 0.0
    wide_basis = basis.astype(np.float64)
    for start in range(0, n, 65_536):
        block = _augmented(vectors[start : start + 65_536], biases[start : start + 65_536])
        stop = start + block.shape[0]
        projected[start:stop] = block @ basis
        wide = block.astype(np.float64)
        rest = np.linalg.norm(wide - (wide @ wide_basis) @ wide_basis.T, axis=1)
        # Round up so float32 never makes a bound too tight.
        residual[start:stop] = (rest * (1 + 1e-6)).astype(np.float32)
        if block.size:
            max_norm = max(max_norm, float(np.linalg.norm(wide, axis=1).max()))
    return projected, residual, max_norm


__all__ = ["PrunedScan", "in_sorted"]
