"""Explanations of blended scores (core/explain.py) are exact whichever way their parts are
found: with the item-to-item peak and segment votes recorded by the request's ranking or
summed again, with the item-to-item votes read from the transposed neighbour table or
from every history item's list, and with the server's compiled steps
(server/compiled_explain.py: one call for every part where the neighbour tables keep their
transposes, else step by step; each step against numpy in tests/test_compiled_explain.py),
for every kind of user and every combination of the blend's terms."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import shelfrank.core.blend as blend_module
from shelfrank.core.blend import MF_ONLY, SEGMENTS, BlendTable, BlendWeights, ItemNeighbours
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.explain import Explanation, explain_scores
from shelfrank.core.serving import ServingModel, SparseRows, UserVector
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


# The blend's terms on and off: all, the model alone, everything but the model, the
# sparse terms alone, and no blend at all (the model's score, or popularity).
WEIGHTS = {
    "everything": EVERYTHING,
    "model": BlendWeights(mf=1.0),
    "no_model": BlendWeights(mf=0.0, trend=0.5, item=2.0, repeat=1.0, segment=1.0),
    "sparse": BlendWeights(mf=0.0, item=1.0, repeat=0.5),
    "unblended": MF_ONLY,
}


def _users(model: ServingModel) -> dict[str, list[tuple[str, UserVector]]]:
    """Users of every kind a request can bring: trained; trained with fresh events (folded
    in); new with events (fold-in); new with profile tokens only; anonymous."""
    trained = [u for u in model.user_ids.ids if model.user_vector(u).history.rows.size][:8]
    fresh = np.array([3, 17, 17, 40], np.int64)
    weights = np.array([1.0, 2.0, 0.5, 1.0], np.float32)
    tokens = list(model.user_token_embeddings.vocabulary.ids[:2])
    return {
        "trained": [(u, model.user_vector(u)) for u in trained],
        "folded": [
            (u, model.user_vector(u, history_rows=fresh, history_weights=weights))
            for u in trained[:4]
        ],
        "fold_in": [
            ("newcomer", model.user_vector("newcomer", history_rows=fresh, history_weights=weights))
        ],
        "features": [("profile", model.user_vector("profile", tokens=tokens))],
        "anonymous": [("anonymous", model.user_vector("anonymous"))],
    }


@pytest.mark.parametrize("weights", list(WEIGHTS), ids=list(WEIGHTS))
def test_one_compiled_call_explains_as_numpy_does_for_every_user_and_term(
    model: ServingModel, weights: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        model.signals,
        "blend",
        BlendTable({s: {m: WEIGHTS[weights] for m in ("new", "repeat")} for s in SEGMENTS}),
    )
    kinds = _users(model)
    assert kinds["folded"][0][1].folded_rows.size
    assert kinds["features"][0][1].source == "features"
    compiled_calls = 0
    real = COMPILED_KERNEL.explained_parts

    def counted(*arguments: object) -> object:
        nonlocal compiled_calls
        compiled_calls += 1
        return real(*arguments)

    monkeypatch.setattr(COMPILED_KERNEL, "explained_parts", counted, raising=False)
    sources: set[str] = set()
    for kind, users in kinds.items():
        for user_id, user in users:
            for mode in ("new", "repeat"):
                top = model.rank(user, 10, mode=mode)
                explained = {}
                for name, kernel in (("numpy", None), ("compiled", COMPILED_KERNEL)):
                    monkeypatch.setattr(model.items, "kernel", kernel)
                    explained[name] = explain_scores(
                        model, user_id, user, top.indices, top.scores, mode=mode
                    )
                _same(explained["compiled"], explained["numpy"])
                sources |= {
                    n.split(":")[0] for e in explained["compiled"] for n, _ in e.contributions
                }
                for explanation, score in zip(
                    explained["compiled"], top.scores.tolist(), strict=True
                ):
                    total = sum(v for _, v in explanation.contributions) + explanation.rest
                    assert total == pytest.approx(score, abs=1e-4), (kind, mode)
    # Every user of every kind went through the one compiled call.
    assert compiled_calls == 2 * sum(len(users) for users in kinds.values())
    if weights in ("everything", "sparse"):
        assert "history" in sources  # item-to-item and buy-again parts were explained


@pytest.mark.parametrize("broken", ["repeat_rate_nan", "identity_zero"])
def test_one_compiled_call_explains_broken_tables_as_numpy_does(
    model: ServingModel, broken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tables training never writes: a NaN buy-again rate (refused when signals are built,
    # set here behind that check; numpy's max is then NaN, and no buy-again part is shown),
    # identity weight 0 for a user without tokens. A NaN neighbour or segment weight can no
    # longer be built at all (the two rankings would scale it differently).
    signals = model.signals
    assert signals is not None
    assert signals.segment_trend is not None
    trained = [u for u in model.user_ids.ids if model.user_vector(u).history.rows.size][:6]
    if broken == "repeat_rate_nan":
        rate = signals.repeat_rate.copy()
        rate[model.user_vector(trained[0]).history.rows[0]] = np.nan
        monkeypatch.setattr(signals, "repeat_rate", rate)
        weights = signals.segment_trend.weights.copy()
        weights[:] = np.nan
        with pytest.raises(InvalidInputError, match="finite"):
            replace(signals.segment_trend, weights=weights)
    else:
        monkeypatch.setattr(model.user_token_embeddings, "identity_weight", 0.0)
    users = [(u, model.user_vector(u)) for u in trained] + [("anonymous", model.user_vector("x"))]
    for user_id, user in users:
        top = model.rank(user, 10, mode="repeat")
        rows = np.union1d(top.indices, user.history.rows[:5])  # history items among them
        scores = model.scores_of(user, rows, mode="repeat")
        explained = {}
        for name, kernel in (("numpy", None), ("compiled", COMPILED_KERNEL)):
            monkeypatch.setattr(model.items, "kernel", kernel)
            explained[name] = explain_scores(model, user_id, user, rows, scores, mode="repeat")
        _same(explained["compiled"], explained["numpy"])


def test_a_model_whose_seen_rows_are_out_of_order_is_refused(model: ServingModel) -> None:
    # The blend and the explanations merge each user's history with other ascending lists:
    # a model file listing a user's items out of order is refused at load, by name.
    seen = model.seen
    row = next(r for r in range(seen.n_rows) if seen.row(r).size >= 2)
    indices = seen.indices.copy()
    start, end = int(seen.indptr[row]), int(seen.indptr[row + 1])
    indices[start:end] = indices[start:end][::-1]
    with pytest.raises(InvalidInputError, match=f"seen: user row {row} lists its items"):
        replace(model, seen=SparseRows(seen.indptr, indices))
    # Every row ascending, however the rows' ends meet: accepted.
    assert replace(model, seen=SparseRows(seen.indptr, seen.indices.copy())).seen.n_rows
