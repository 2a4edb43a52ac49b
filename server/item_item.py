"""Item-to-item scorers learned from the interaction matrix, kept as top-N neighbours.

- **EASE** (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019):
  ``P = (XᵀX + λI)⁻¹``, ``B = I - P·diag(1/diag(P))`` with a zero diagonal; a user with
  history row ``x`` scores ``x·B``. Exact, but dense in items² memory and items³ time, so
  it is used up to ``ease_max_items`` items (``benchmarks/RESULTS.md``, Quality: 5,000
  items solve in seconds here, and time grows with the cube).
- **Item-kNN with shrinkage** above that: cosine of item columns with a shrink term,
  ``c_ij / (sqrt(n_i n_j) + h)`` (Sarwar et al. 2001; the shrunk form that Dacrema et al.,
  "Are We Really Making Much Progress?", RecSys 2019, found competitive when tuned),
  computed sparsely from co-occurrence counts.

Either way the served form is the ``top_n`` weights of each row largest in magnitude
(:class:`shelfrank.core.blend.ItemNeighbours`), so serving cost does not depend on which.
EASE's negative weights matter: on MovieLens-100k (ua) keeping the 200 largest in
magnitude scores P@10 0.186 at lambda 200 (the dense model 0.184), keeping only positive
ones 0.177.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack

from shelfrank.core.blend import ItemNeighbours
from shelfrank.core.errors import InvalidInputError

EASE_MAX_ITEMS = 5_000
_BLOCK = 1_024


def _top_rows_dense(matrix: npt.NDArray[np.float64], top_n: int) -> ItemNeighbours:
    n = matrix.shape[0]
    keep = min(top_n, max(n - 1, 0))
    indptr = np.zeros(n + 1, np.int64)
    indices: list[npt.NDArray[np.int64]] = []
    weights: list[npt.NDArray[np.float32]] = []
    for start in range(0, n, _BLOCK):
        block = matrix[start : start + _BLOCK]
        if keep < n:
            magnitude = -np.abs(block)
            part = (
                np.argpartition(magnitude, keep - 1, axis=1)[:, :keep]
                if keep
                else np.empty((block.shape[0], 0), np.int64)  # one item: no neighbour
            )
        else:
            part = np.tile(np.arange(n), (block.shape[0], 1))
        for offset in range(block.shape[0]):
            cols = part[offset]
            values = block[offset, cols]
            good = values != 0
            cols, values = cols[good], values[good]
            order = np.lexsort((cols, -values))
            indices.append(cols[order].astype(np.int64))
            weights.append(values[order].astype(np.float32))
            indptr[start + offset + 1] = indptr[start + offset] + cols.size
    return ItemNeighbours(
        indptr,
        np.concatenate(indices) if indices else np.empty(0, np.int64),
        np.concatenate(weights) if weights else np.empty(0, np.float32),
    )


def ease_weights(matrix: Any, l2: float) -> npt.NDArray[np.float64]:
    """The dense EASE weight matrix B (items x items, zero diagonal)."""
    if l2 <= 0:
        raise InvalidInputError(f"l2: must be > 0, got {l2}")
    x = sp.csr_matrix(matrix).astype(np.float64)
    gram = np.asarray((x.T @ x).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    # XᵀX + λI is symmetric positive definite: a Cholesky inverse is about twice as fast
    # as a general one (LAPACK potrf + potri fill the upper triangle).
    factor, info = lapack.dpotrf(gram, lower=False, overwrite_a=True)
    if info != 0:
        raise InvalidInputError(f"l2: XᵀX + {l2}·I is not positive definite (LAPACK info {info})")
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise InvalidInputError(f"l2: cannot invert XᵀX + {l2}·I (LAPACK info {info})")
    inverse = np.triu(inverse) + np.triu(inverse, 1).T
    weights: npt.NDArray[np.float64] = inverse / (-np.diag(inverse))[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def ease_neighbours(matrix: sp.spmatrix, l2: float, top_n: int) -> ItemNeighbours:
    return _top_rows_dense(ease_weights(matrix, l2), top_n)


def knn_neighbours(matrix: sp.spmatrix, shrink: float, top_n: int) -> ItemNeighbours:
    """Shrunk cosine between item columns, the ``top_n`` best per item."""
    if shrink < 0:
        raise InvalidInputError(f"shrink: must be >= 0, got {shrink}")
    from shelfrank.server.compiled_fit import top_shrunk_cosine

    x = sp.csc_matrix(matrix).astype(np.float32)
    x.data[:] = 1.0
    counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)
    co = sp.csr_matrix(x.T @ x)
    indptr, indices, weights = top_shrunk_cosine(co, counts, shrink, top_n)
    return ItemNeighbours(indptr, indices, weights, items=co.shape[1])


def top_per_row(matrix: sp.csr_matrix, top_n: int) -> ItemNeighbours:
    """The ``top_n`` largest entries of each row of a sparse matrix (columns are items),
    ties at the cut to the lower column, unordered within the row (one compiled pass,
    server/compiled_fit.py)."""
    from shelfrank.server.compiled_fit import top_per_row as compiled_top_per_row

    csr = sp.csr_matrix(matrix)
    indptr, indices, weights = compiled_top_per_row(csr.indptr, csr.indices, csr.data, top_n)
    return ItemNeighbours(indptr, indices, weights, items=csr.shape[1])


def item_neighbours(
    matrix: sp.spmatrix,
    *,
    method: str,
    l2: float,
    shrink: float,
    top_n: int,
    ease_max_items: int = EASE_MAX_ITEMS,
) -> tuple[ItemNeighbours, str]:
    """Neighbours by ``method`` (``auto``: EASE up to ``ease_max_items`` items, else kNN;
    ``off``: none) and the name of the method used."""
    n_items = matrix.shape[1]
    if method == "off" or n_items == 0:
        return ItemNeighbours.empty(n_items), "off"
    if method == "ease" or (method == "auto" and n_items <= ease_max_items):
        return ease_neighbours(matrix, l2, top_n), "ease"
    return knn_neighbours(matrix, shrink, top_n), "knn"
