from __future__ import annotations

import numpy as np
import pytest

from shelfrank.core.foldin import FoldInConfig, fold_in_user


def _items(seed: int = 0, n: int = 200, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.normal(0, 0.1, n).astype(np.float32)


def test_history_items_rise_to_the_top() -> None:
    vectors, biases = _items()
    history = np.array([3, 17, 42])
    user = fold_in_user(vectors, biases, history, np.ones(3))
    scores = vectors @ user + biases
    ranks = np.argsort(np.argsort(-scores))
    # Without history the ranking is by bias; fold-in lifts the history into the top 20%.
    assert ranks[history].mean() < 40
    assert ranks[history].mean() < np.argsort(np.argsort(-biases))[history].mean()


def test_dismissals_push_items_down() -> None:
    vectors, biases = _items(1)
    base = fold_in_user(vectors, biases, np.array([5, 6]), np.ones(2))
    with_dismiss = fold_in_user(vectors, biases, np.array([5, 6, 9]), np.array([1.0, 1.0, -1.0]))
    assert vectors[9] @ with_dismiss < vectors[9] @ base


def test_no_history_returns_the_prior_and_is_deterministic() -> None:
    vectors, biases = _items(2)
    prior = np.arange(8, dtype=np.float32)
    empty = fold_in_user(vectors, biases, np.empty(0, np.int64), np.empty(0), prior)
    assert np.array_equal(empty, prior)
    a = fold_in_user(vectors, biases, np.array([1, 2]), np.ones(2), prior)
    b = fold_in_user(vectors, biases, np.array([1, 2]), np.ones(2), prior)
    assert np.array_equal(a, b)


def test_stronger_prior_stays_closer() -> None:
    vectors, biases = _items(3)
    prior = np.zeros(8, np.float32)
    loose = fold_in_user(vectors, biases, np.array([1, 2]), np.ones(2), prior, FoldInConfig(l2=0.1))
    tight = fold_in_user(vectors, biases, np.array([1, 2]), np.ones(2), prior, FoldInConfig(l2=10))
    assert np.linalg.norm(tight) < np.linalg.norm(loose)


def test_sampled_softmax_agrees_with_the_exact_one() -> None:
    vectors, biases = _items(4, n=3000)
    history = np.array([10, 2500, 77])
    exact = fold_in_user(vectors, biases, history, np.ones(3), None)
    sampled = fold_in_user(
        vectors, biases, history, np.ones(3), None, FoldInConfig(max_softmax_items=500)
    )
    cosine = exact @ sampled / (np.linalg.norm(exact) * np.linalg.norm(sampled))
    assert cosine > 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"l2": 0}, "l2"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"max_softmax_items": 1}, "max_softmax_items"),
    ],
)
def test_config_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FoldInConfig(**kwargs)  # type: ignore[arg-type]


def test_mismatched_history_lengths_are_rejected() -> None:
    vectors, biases = _items()
    with pytest.raises(ValueError, match="same length"):
        fold_in_user(vectors, biases, np.array([1, 2]), np.ones(3))
