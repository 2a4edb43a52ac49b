"""The compiled item-to-item votes of an explanation (server/compiled_explain.py) are
bit-identical to core/explain.py's numpy ones: on random neighbour tables and histories,
and end to end on a trained blended model's explanations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shelfrank.core.blend as blend_module
from shelfrank.core.blend import BlendTable, BlendWeights, ItemNeighbours, UserHistory
from shelfrank.core.explain import _add_votes, _Parts, explain_scores
from shelfrank.core.serving import ServingModel
from shelfrank.datasets.synth import SynthConfig, generate
from shelfrank.server.compiled_blend import COMPILED_KERNEL
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel

EVERYTHING = BlendWeights(mf=1.0, trend=0.5, item=2.0, repeat=1.0, segment=1.0)


@st.composite
def votes_case(draw: st.DrawFn) -> tuple[ItemNeighbours, UserHistory, np.ndarray, np.ndarray]:
    items = draw(st.integers(2, 30))
    indptr, indices, weights = [0], [], []
    for _ in range(items):
        targets = draw(st.lists(st.integers(0, items - 1), unique=True, max_size=items))
        indices += targets
        weights += draw(st.lists(st.integers(-8, 8), min_size=len(targets), max_size=len(targets)))
        indptr.append(len(indices))
    neighbours = ItemNeighbours(
        np.array(indptr, np.int64),
        np.array(indices, np.int64),
        np.array(weights, np.float32) / np.float32(4),
    )
    history = np.array(sorted(draw(st.sets(st.integers(0, items - 1), min_size=1))), np.int64)
    strength = np.array(
        draw(st.lists(st.floats(-2, 3, width=32), min_size=history.size, max_size=history.size)),
        np.float32,
    )
    user = UserHistory(history, strength, np.zeros(history.size, np.float32))
    rows = np.array(draw(st.lists(st.integers(0, items - 1), unique=True, min_size=1)), np.int64)
    # Parts columns: the history plus other (folded) rows, as explain_scores builds them.
    extra = draw(st.sets(st.integers(0, items - 1), max_size=5))
    columns = np.union1d(history, np.array(sorted(extra), np.int64)).astype(np.int64)
    return neighbours, user, rows, columns


@settings(max_examples=200, deadline=None)
@given(votes_case(), st.floats(0.25, 4.0))
def test_compiled_votes_equal_the_numpy_votes(
    case: tuple[ItemNeighbours, UserHistory, np.ndarray, np.ndarray], weight: float
) -> None:
    neighbours, history, rows, columns = case
    member = np.zeros(neighbours.items, np.bool_)
    member[rows] = True
    order = np.argsort(rows)
    expected, compiled = _Parts(rows.size, columns), _Parts(rows.size, columns)
    _add_votes(expected, neighbours, history, weight, rows, member, order)
    _add_votes(compiled, neighbours, history, weight, rows, member, order, COMPILED_KERNEL)
    assert np.array_equal(compiled.history_values, expected.history_values)


@pytest.fixture(scope="module")
def model() -> ServingModel:
    shop = generate(SynthConfig.shop(300, 200, 8_000, seed=3))
    config = TrainConfig(components=8, epochs=3, seed=1, num_threads=1, min_validation_users=5)
    serving = HybridModel.train(
        shop.interactions, config, items=shop.items, users=shop.users
    ).to_serving()
    assert serving.signals is not None
    table = {
        segment: {"new": EVERYTHING, "repeat": EVERYTHING} for segment in blend_module.SEGMENTS
    }
    serving.signals.blend = BlendTable(table)
    return serving


def test_explanations_are_the_same_with_the_compiled_votes(
    model: ServingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [u for u in model.user_ids.ids if model.user_vector(u).history.rows.size][:40]
    assert len(users) == 40

    def explained(user_id: str) -> list[object]:
        user = model.user_vector(user_id)
        top = model.rank(user, 10, mode="repeat")
        return list(explain_scores(model, user_id, user, top.indices, top.scores, mode="repeat"))

    monkeypatch.setattr(model.items, "kernel", None)
    expected = [explained(u) for u in users]
    monkeypatch.setattr(model.items, "kernel", COMPILED_KERNEL)
    compiled = [explained(u) for u in users]
    assert compiled == expected  # frozen dataclasses: every name, value and rest equal
    voted = sum(
        name.startswith("history:")
        for explanations in compiled
        for e in explanations
        for name, _ in e.contributions
    )
    assert voted > 0
