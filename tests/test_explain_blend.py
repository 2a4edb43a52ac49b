"""Explanations of blended scores (core/explain.py) are exact whichever way their parts are
found: with the item-to-item peak and segment votes recorded by the request's ranking or
summed again, with the item-to-item votes read from the transposed neighbour table or
from every history item's list, and with the server's compiled steps
(server/compiled_explain.py; each step against numpy in tests/test_compiled_explain.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import shelfrank.core.blend as blend_module
from shelfrank.core.blend import BlendTable, BlendWeights, ItemNeighbours
from shelfrank.core.explain import Explanation, explain_scores
from shelfrank.core.serving import ServingModel
from shelfrank.datasets.synth import SynthConfig, generate
from shelfrank.server.compiled_blend import COMPILED_KERNEL
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel

# Every component on, so every kind of part is explained.
EVERYTHING = BlendWeights(mf=1.0, trend=0.5, item=2.0, repeat=1.0, segment=1.0)


@pytest.fixture(scope="module")
def model() -> ServingModel:
    shop = generate(SynthConfig.shop(300, 200, 8_000, seed=3))
    # A long trend half-life: every shopper's segment trend is large enough to be shown.
    config = TrainConfig(
        components=8, epochs=3, seed=1, num_threads=1, min_validation_users=5, half_life_days=120
    )
    serving = HybridModel.train(
        shop.interactions, config, items=shop.items, users=shop.users
    ).to_serving()
    assert serving.signals is not None
    assert serving.signals.segment_trend is not None
    table = {
        segment: {"new": EVERYTHING, "repeat": EVERYTHING} for segment in blend_module.SEGMENTS
    }
    serving.signals.blend = BlendTable(table)
    return serving


def _explained(
    model: ServingModel, user_id: str, *, ranked_first: bool
) -> tuple[list[Explanation], np.ndarray]:
    user = model.user_vector(user_id)
    top = model.rank(user, 10, mode="repeat")
    if not ranked_first:  # the same user, nothing recorded by a ranking
        user = model.user_vector(user_id)
    explained = explain_scores(model, user_id, user, top.indices, top.scores, mode="repeat")
    return explained, top.scores


def _same(a: list[Explanation], b: list[Explanation]) -> None:
    assert [e.reason for e in a] == [e.reason for e in b]
    assert [e.because for e in a] == [e.because for e in b]
    for left, right in zip(a, b, strict=True):
        assert [name for name, _ in left.contributions] == [n for n, _ in right.contributions]
        np.testing.assert_allclose(
            [v for _, v in left.contributions], [v for _, v in right.contributions], atol=1e-9
        )
        assert left.rest == pytest.approx(right.rest, abs=1e-9)


def test_explanations_do_not_depend_on_what_ranking_recorded(model: ServingModel) -> None:
    users = [u for u in model.user_ids.ids if model.user_vector(u).history.rows.size][:30]
    assert len(users) == 30
    with_history = 0
    for user_id in users:
        recorded, scores = _explained(model, user_id, ranked_first=True)
        summed, _ = _explained(model, user_id, ranked_first=False)
        _same(recorded, summed)
        for explained, score in zip(recorded, scores.tolist(), strict=True):
            total = sum(value for _, value in explained.contributions) + explained.rest
            assert total == pytest.approx(score, abs=1e-4)
        with_history += sum(
            any(name.startswith("history:") for name, _ in e.contributions) for e in recorded
        )
        assert any(name == "signal:segment" for e in recorded for name, _ in e.contributions)
    assert with_history > 0  # the item-to-item and repeat terms were explained


def test_votes_from_the_transpose_equal_votes_from_the_history(
    model: ServingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    signals = model.signals
    assert signals is not None
    users = [u for u in model.user_ids.ids if model.user_vector(u).history.rows.size][:30]
    transposed = [_explained(model, u, ranked_first=True)[0] for u in users]
    assert signals.neighbours.voters() is not None
    # A table above the size limit keeps no transpose: every history item's list is read.
    monkeypatch.setattr(blend_module, "TRANSPOSE_MAX", 0)
    fresh = ItemNeighbours(
        signals.neighbours.indptr, signals.neighbours.indices, signals.neighbours.weights
    )
    assert fresh.voters() is None
    monkeypatch.setattr(signals, "neighbours", fresh)
    for user_id, expected in zip(users, transposed, strict=True):
        _same(_explained(model, user_id, ranked_first=True)[0], expected)
        _same(_explained(model, user_id, ranked_first=False)[0], expected)


def test_the_transpose_lists_each_items_voters() -> None:
    neighbours = ItemNeighbours(
        np.array([0, 2, 3, 3], np.int64),
        np.array([1, 2, 2], np.int64),
        np.array([0.5, -1.0, 2.0], np.float32),
    )
    voters = neighbours.voters()
    assert voters is not None
    assert voters.indptr.tolist() == [0, 0, 1, 3]
    assert voters.indices.tolist() == [0, 0, 1]
    assert voters.weights.tolist() == [0.5, -1.0, 2.0]
    assert neighbours.voters() is voters  # built once
    assert replace(neighbours).voters() is not voters  # a cache, not part of the value


def test_explanations_are_the_same_with_the_compiled_steps(
    model: ServingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [u for u in model.user_ids.ids if model.user_vector(u).history.rows.size][:40]
    assert len(users) == 40

    def explained(user_id: str) -> list[Explanation]:
        user = model.user_vector(user_id)
        top = model.rank(user, 10, mode="repeat")
        return list(explain_scores(model, user_id, user, top.indices, top.scores, mode="repeat"))

    monkeypatch.setattr(model.items, "kernel", None)
    expected = [explained(u) for u in users]
    monkeypatch.setattr(model.items, "kernel", COMPILED_KERNEL)
    compiled = [explained(u) for u in users]
    for left, right in zip(compiled, expected, strict=True):
        _same(left, right)  # the token credits and summaries' sums: to float rounding
    voted = sum(
        name.startswith("history:")
        for explanations in compiled
        for e in explanations
        for name, _ in e.contributions
    )
    assert voted > 0
