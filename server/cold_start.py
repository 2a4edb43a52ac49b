"""Cold-start item representations: a ridge map from metadata tokens to learned vectors.

LightFM's own answer for an item without interactions (the sum of its token embeddings)
is weak, because in a hybrid model the identity features absorb most of the signal. So
after training we fit, on the warm items, a ridge regression from the item's 0/1 token
row ``f`` to its full learned representation ``[vector | bias]``:

    W = argmin |F W - Y|^2 + l2 |W|^2,    cold item: [vector | bias] = f W

On ml-100k's cold-start protocol this lifts precision@10 among unseen items from 0.165
(LightFM token embeddings) to about 0.19 (see README). The regularisation strength is
chosen without test data: k-fold over the warm items, each fold's items predicted from the
others and ranked, per user, against the user's training positives (the cold-start task in
miniature); the best ``l2`` of the grid is refitted on every warm item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shelfrank.core.errors import InvalidInputError

DEFAULT_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
FALLBACK_L2 = 30.0
# Above this many tokens the normal equations are solved by conjugate gradients instead
# of a dense factorisation (memory and time grow with the square/cube of the vocabulary).
DENSE_TOKEN_LIMIT = 4096
# Choosing l2 on a seeded sample keeps the choice cheap for large catalogues; the final
# map is fitted on every warm item.
MAX_VALIDATION_ITEMS = 20_000
MAX_VALIDATION_USERS = 2_000

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ColdStartMap:
    """Per-token rows of the ridge map: a cold item's vector/bias is the sum over its tokens."""

    token_vectors: npt.NDArray[np.float32]
    token_biases: npt.NDArray[np.float32]
    l2: float
    validation: dict[float, float] = field(default_factory=dict)


def solve_ridge(
    features: sp.csr_matrix,
    targets: Matrix,
    l2: float,
    *,
    dense_limit: int = DENSE_TOKEN_LIMIT,
    tolerance: float = 1e-8,
    max_iterations: int = 500,
) -> Matrix:
    """``(F^T F + l2 I)^-1 F^T Y`` for a sparse ``F`` and dense ``Y`` (all columns at once)."""
    if l2 <= 0:
        raise InvalidInputError(f"l2: must be positive, got {l2}")
    rhs = np.asarray(features.T @ targets, dtype=np.float64)
    n_tokens = features.shape[1]
    if n_tokens <= dense_limit:
        gram = np.asarray((features.T @ features).todense(), dtype=np.float64)
        gram[np.diag_indices_from(gram)] += l2
        return np.asarray(np.linalg.solve(gram, rhs))

    def apply(block: Matrix) -> Matrix:
        return np.asarray(features.T @ (features @ block)) + l2 * block

    # Block conjugate gradients with a Jacobi preconditioner (token frequencies differ by
    # orders of magnitude, which plain CG converges slowly on); every column is an
    # independent run, vectorised.
    diagonal = np.asarray(features.multiply(features).sum(axis=0)).ravel() + l2
    inverse_diagonal = (1.0 / diagonal)[:, None]
    solution = np.zeros_like(rhs)
    residual = rhs.copy()
    preconditioned = residual * inverse_diagonal
    direction = preconditioned.copy()
    rho = (residual * preconditioned).sum(axis=0)
    target = tolerance * tolerance * np.maximum((rhs * rhs).sum(axis=0), 1e-300)
    for _ in range(max_iterations):
        if np.all((residual * residual).sum(axis=0) <= target):
            break
        product = apply(direction)
        step = rho / np.maximum((direction * product).sum(axis=0), 1e-300)
        solution += direction * step
        residual -= product * step
        preconditioned = residual * inverse_diagonal
        new_rho = (residual * preconditioned).sum(axis=0)
        direction = preconditioned + direction * (new_rho / np.maximum(rho, 1e-300))
        rho = new_rho
    return solution


def _fold_precision(
    features: sp.csr_matrix,
    targets: Matrix,
    rows: npt.NDArray[np.int64],
    folds: Sequence[npt.NDArray[np.int64]],
    l2: float,
    user_vectors: Matrix,
    positives: sp.csr_matrix,
    k: int,
) -> float:
    hits, users = 0.0, 0
    for fold in folds:
        train_rows = np.setdiff1d(rows, fold)
        weights = solve_ridge(features[train_rows], targets[train_rows], l2)
        predicted = np.asarray(features[fold] @ weights)
        fold_positives = positives[:, fold]
        active = np.flatnonzero(np.diff(fold_positives.indptr) > 0)
        if active.size == 0:
            continue
        if active.size > MAX_VALIDATION_USERS:  # a seeded sample keeps large shops cheap
            active = np.sort(
                np.random.default_rng(0).choice(active, MAX_VALIDATION_USERS, replace=False)
            )
        scores = user_vectors[active] @ predicted[:, :-1].T + predicted[:, -1]
        depth = min(k, fold.size)
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        truth = fold_positives[active].toarray() > 0
        hits += float(np.take_along_axis(truth, top, axis=1).sum()) / min(k, fold.size)
        users += active.size
    return hits / users if users else float("nan")


def fit_cold_start_map(
    token_rows: sp.csr_matrix,
    item_vectors: npt.NDArray[np.float32],
    item_biases: npt.NDArray[np.float32],
    warm: npt.NDArray[np.bool_],
    user_vectors: npt.NDArray[np.float32],
    positives: sp.csr_matrix,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    folds: int = 5,
    seed: int = 0,
    k: int = 10,
) -> ColdStartMap:
    """Fit the map on warm items that have tokens; choose ``l2`` by k-fold ranking."""
    features = sp.csr_matrix(token_rows, dtype=np.float64, copy=True)
    features.data[:] = 1.0  # presence, whatever weights the caller's rows carry
    targets = np.hstack([item_vectors, item_biases[:, None]]).astype(np.float64)
    has_tokens = np.diff(features.indptr) > 0
    rows = np.flatnonzero(warm & has_tokens).astype(np.int64)
    dim = item_vectors.shape[1]
    if rows.size == 0 or features.shape[1] == 0:
        empty = np.zeros((features.shape[1], dim), np.float32)
        return ColdStartMap(empty, np.zeros(features.shape[1], np.float32), FALLBACK_L2)
    validation: dict[float, float] = {}
    if rows.size >= 2 * folds and len(grid) > 1:
        order = np.random.default_rng(seed).permutation(rows)[:MAX_VALIDATION_ITEMS]
        split = [np.sort(part) for part in np.array_split(order, folds)]
        for l2 in grid:
            validation[float(l2)] = _fold_precision(
                features,
                targets,
                rows,
                split,
                float(l2),
                user_vectors.astype(np.float64),
                sp.csr_matrix(positives),
                k,
            )
    scored = {l2: v for l2, v in validation.items() if np.isfinite(v)}
    best = max(scored, key=lambda l2: (scored[l2], l2)) if scored else FALLBACK_L2
    weights = solve_ridge(features[rows], targets[rows], best)
    return ColdStartMap(
        weights[:, :-1].astype(np.float32), weights[:, -1].astype(np.float32), best, validation
    )
