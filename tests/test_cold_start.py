from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shelfrank.server.cold_start import FALLBACK_L2, fit_cold_start_map, solve_ridge


def _problem(
    seed: int = 0, items: int = 400, tokens: int = 30, dim: int = 4
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = sp.random(items, tokens, density=0.15, random_state=seed, format="csr")
    features.data[:] = 1.0
    truth = rng.normal(size=(tokens, dim + 1))
    targets = features @ truth + rng.normal(0, 0.01, size=(items, dim + 1))
    return features, targets, truth


def test_dense_and_conjugate_gradient_solutions_agree() -> None:
    features, targets, _ = _problem()
    dense = solve_ridge(features, targets, 3.0)
    iterative = solve_ridge(features, targets, 3.0, dense_limit=0)
    assert np.allclose(dense, iterative, atol=1e-6)
    normal = features.T @ features + 3.0 * sp.identity(features.shape[1])
    assert np.allclose(normal @ dense, features.T @ targets, atol=1e-8)


def test_ridge_recovers_a_linear_map_with_small_l2() -> None:
    features, targets, truth = _problem(1)
    used = np.asarray(features.sum(axis=0)).ravel() > 5
    assert np.allclose(solve_ridge(features, targets, 1e-3)[used], truth[used], atol=0.05)
    with pytest.raises(ValueError, match="l2: must be positive"):
        solve_ridge(features, targets, 0.0)


def test_map_is_fitted_on_warm_items_and_l2_chosen_from_the_grid() -> None:
    features, targets, _ = _problem(2)
    rng = np.random.default_rng(2)
    users = rng.normal(size=(50, 4)).astype(np.float32)
    scores = users @ targets[:, :-1].T + targets[:, -1]
    positives = sp.csr_matrix(
        (scores > np.quantile(scores, 0.9, axis=1, keepdims=True)).astype(np.float32)
    )
    warm = np.ones(400, dtype=bool)
    warm[:50] = False
    result = fit_cold_start_map(
        features,
        targets[:, :-1].astype(np.float32),
        targets[:, -1].astype(np.float32),
        warm,
        users,
        positives,
        grid=(0.01, 1.0, 1000.0),
    )
    assert set(result.validation) == {0.01, 1.0, 1000.0}
    assert result.l2 == max(result.validation, key=lambda k: (result.validation[k], k))
    assert result.validation[1000.0] < max(result.validation.values())
    predicted = features[:50] @ np.hstack([result.token_vectors, result.token_biases[:, None]])
    assert np.corrcoef(predicted[:, 0], targets[:50, 0])[0, 1] > 0.9  # cold items were never seen


def test_no_tokens_gives_an_empty_map_with_the_fallback_l2() -> None:
    empty = sp.csr_matrix((10, 0))
    result = fit_cold_start_map(
        empty,
        np.zeros((10, 3), np.float32),
        np.zeros(10, np.float32),
        np.ones(10, bool),
        np.zeros((2, 3), np.float32),
        sp.csr_matrix((2, 10)),
    )
    assert result.token_vectors.shape == (0, 3)
    assert result.l2 == FALLBACK_L2
