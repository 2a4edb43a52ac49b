"""Fold-in: a vector for a user the model has not trained on, from a short history.

The item vectors stay fixed; the user vector ``u`` is the maximum a-posteriori estimate
under a listwise (softmax) likelihood of the history:

    minimise  -sum_h w_h * s_h  +  W * logsumexp_j(s_j)  +  (l2 / 2) * |u - u0|^2
    with      s_j = v_j · u + b_j,   W = sum of the positive weights w_h.

Items with a positive weight (views, carts, purchases) are pulled to the top of the
ranking, items with a negative weight (dismissals) pushed down. ``u0`` is the prior: the
vector the user's features give (or zero), so a user with little history stays close to
the cold-start answer. The objective is strictly convex, so Newton's method converges in a
handful of steps and the result is deterministic. For large catalogues the softmax runs
over the history plus a fixed-size seeded sample of other items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FoldInConfig:
    l2: float = 1.0
    max_iterations: int = 30
    tolerance: float = 1e-5
    # Above this catalogue size the softmax uses the history plus a sample of items.
    max_softmax_items: int = 4_096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise InvalidInputError(f"l2: must be positive, got {self.l2}")
        if self.max_iterations < 1:
            raise InvalidInputError(f"max_iterations: must be >= 1, got {self.max_iterations}")
        if self.max_softmax_items < 2:
            raise InvalidInputError(
                f"max_softmax_items: must be >= 2, got {self.max_softmax_items}"
            )


def _logsumexp(values: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
    peak = float(values.max())
    weights = np.exp(values - peak)
    total = float(weights.sum())
    return peak + float(np.log(total)), weights / total


@dataclass(frozen=True)
class FoldInPool:
    """The items the softmax runs over (all, or a seeded sample of large catalogues), in
    float64, prepared once per item table rather than once per request."""

    rows: npt.NDArray[np.int64]  # ascending
    vectors: npt.NDArray[np.float64]
    biases: npt.NDArray[np.float64]


def fold_in_pool(
    item_vectors: FloatArray, item_biases: FloatArray, config: FoldInConfig | None = None
) -> FoldInPool:
    cfg = config or FoldInConfig()
    n_items = item_vectors.shape[0]
    if n_items <= cfg.max_softmax_items:
        rows = np.arange(n_items, dtype=np.int64)
    else:
        rng = np.random.default_rng(cfg.seed)
        rows = np.sort(rng.choice(n_items, size=cfg.max_softmax_items, replace=False))
    return FoldInPool(
        rows.astype(np.int64),
        item_vectors[rows].astype(np.float64),
        item_biases[rows].astype(np.float64),
    )


def fold_in_user(
    item_vectors: FloatArray,
    item_biases: FloatArray,
    history_rows: npt.NDArray[np.int64],
    history_weights: npt.NDArray[np.floating],
    prior: FloatArray | None = None,
    config: FoldInConfig | None = None,
    pool: FoldInPool | None = None,
) -> FloatArray:
    """Return the folded-in user vector (float32, same dimension as the items).

    ``pool`` (from :func:`fold_in_pool` with the same table and config) saves preparing the
    softmax items on every call."""
    cfg = config or FoldInConfig()
    dim = item_vectors.shape[1]
    u0 = np.zeros(dim) if prior is None else np.asarray(prior, dtype=np.float64)
    rows = np.asarray(history_rows, dtype=np.int64)
    weights = np.asarray(history_weights, dtype=np.float64)
    if rows.shape != weights.shape:
        raise InvalidInputError("history_rows and history_weights must have the same length")
    if rows.size == 0:
        return u0.astype(np.float32)
    rows, inverse = np.unique(rows, return_inverse=True)
    weights = np.bincount(inverse, weights=weights, minlength=rows.size).astype(np.float64)
    positive_mass = float(weights[weights > 0].sum())

    softmax = pool if pool is not None else fold_in_pool(item_vectors, item_biases, cfg)
    outside = rows[~np.isin(rows, softmax.rows)]  # history items the sample left out
    vectors, biases = softmax.vectors, softmax.biases
    if outside.size:
        vectors = np.vstack([vectors, item_vectors[outside].astype(np.float64)])
        biases = np.concatenate([biases, item_biases[outside].astype(np.float64)])
    hist_vectors = item_vectors[rows].astype(np.float64)
    pull = weights @ hist_vectors  # sum_h w_h v_h
    history_bias = float(weights @ item_biases[rows])
    ridge = cfg.l2 * np.eye(dim)

    def objective(u: npt.NDArray[np.float64]) -> float:
        scores = vectors @ u + biases
        lse, _ = _logsumexp(scores)
        linear = float(pull @ u) + history_bias
        return -linear + positive_mass * lse + 0.5 * cfg.l2 * float((u - u0) @ (u - u0))

    u = u0.copy()
    current = objective(u)
    for _ in range(cfg.max_iterations):
        scores = vectors @ u + biases
        _, probs = _logsumexp(scores)
        mean = probs @ vectors
        grad = -pull + positive_mass * mean + cfg.l2 * (u - u0)
        # Covariance of the softmax: sum_j p_j v_j v_j' - mean mean' (one GEMM, no copies).
        weighted = vectors * np.sqrt(probs)[:, None]
        hessian = positive_mass * (weighted.T @ weighted - np.outer(mean, mean)) + ridge
        step = np.linalg.solve(hessian, grad)
        decrement = float(grad @ step)
        if decrement / 2 <= cfg.tolerance:
            break
        size = 1.0
        while True:  # backtracking line search keeps every step a descent step
            candidate = u - size * step
            value = objective(candidate)
            if value <= current - 0.25 * size * decrement or size < 1e-6:
                break
            size *= 0.5
        u, current = candidate, value
    return u.astype(np.float32)
