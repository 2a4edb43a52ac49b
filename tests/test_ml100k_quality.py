"""The engine's acceptance figures on MovieLens-100k, guarded as regression tests.

Setting (issue 2): ua.base for training, ua.test for testing, ratings >= 4 positive
(imported as purchases), items seen in training excluded, default training settings with
a fixed seed and one thread so each run is reproducible.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from shelfrank.core.events import EventType
from shelfrank.datasets import movielens
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation.fold_in import evaluate_fold_in
from shelfrank.server.evaluation.runner import evaluate_split
from shelfrank.server.evaluation.splits import cold_items_split, given_split

# ua.test is a random hold-out of each user's ratings, so the blend is fitted on a random
# hold-out too (the default, the newest events, suits a shop predicting its next weeks).
CONFIG = replace(TrainConfig(), seed=1, num_threads=1, validation_split="random")
PURCHASE = frozenset({EventType.PURCHASE})
Data = tuple[Interactions, Interactions, FeatureTable, FeatureTable]


@pytest.fixture(scope="module")
def data(ml100k: Path) -> Data:
    train, _ = movielens.read_ratings(ml100k / "ua.base")
    test, _ = movielens.read_ratings(ml100k / "ua.test")
    return train, test, movielens.read_items(ml100k), movielens.read_users(ml100k)


def test_warm_precision_beats_target_and_baselines(data: Data) -> None:
    train, test, items, users = data
    report = evaluate_split(
        given_split(train, test),
        CONFIG,
        items=items,
        users=users,
        models=("hybrid", "popularity", "user-knn"),
        relevant=PURCHASE,
    )
    hybrid = report.result("hybrid").metrics
    assert hybrid["precision"] >= 0.145
    assert hybrid["precision"] > report.result("user-knn").metrics["precision"]
    assert hybrid["precision"] > 2 * report.result("popularity").metrics["precision"]
    assert report.result("hybrid").users > 900


def test_cold_start_items_precision(data: Data) -> None:
    train, _, items, users = data
    report = evaluate_split(
        cold_items_split(train, 0.2, seed=42),
        CONFIG,
        items=items,
        users=users,
        models=("hybrid",),
        relevant=PURCHASE,
    )
    assert report.result("hybrid").metrics["precision"] >= 0.18


def test_fold_in_users_keep_ninety_percent_of_trained_precision(data: Data) -> None:
    train, test, items, users = data
    report = evaluate_fold_in(
        train, test, CONFIG, items=items, users=users, fold_users=100, seed=0, relevant=PURCHASE
    )
    assert report.notes["precision_ratio_fold_in_vs_trained"] >= 0.9
    folded = report.result("hybrid-fold-in").metrics["precision"]
    assert folded > report.result("hybrid-features-only").metrics["precision"]


@pytest.mark.slow
def test_ridge_cold_start_beats_lightfm_token_embeddings_across_splits(data: Data) -> None:
    """The cold-start figure depends a lot on which items are held out, so the design
    choice (ridge map vs LightFM's token embeddings) is checked over several splits."""
    train, _, items, users = data
    gains = []
    for split_seed in range(5):
        split = cold_items_split(train, 0.2, seed=split_seed)
        scores = {}
        for method in ("ridge", "lightfm"):
            config = replace(CONFIG, item_cold_start=method)
            report = evaluate_split(
                split, config, items=items, users=users, models=("hybrid",), relevant=PURCHASE
            )
            scores[method] = report.result("hybrid").metrics["precision"]
        gains.append(scores["ridge"] - scores["lightfm"])
    assert min(gains) >= -0.005
    assert sum(gains) / len(gains) > 0.005
