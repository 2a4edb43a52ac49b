"""Time-aware training signals (server/training_data.py) and the blend end to end: fitted
at training, saved, loaded and served by the offline path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shelfrank.core.events import EventType
from shelfrank.core.model_format import load_serving_model
from shelfrank.datasets.records import Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.training_data import DAY_SECONDS, REPEAT_PRIOR, build_training_data

P, V, D = EventType.PURCHASE, EventType.VIEW, EventType.DISMISS
NOW = 1_700_000_000.0


def _events(rows: list[tuple[str, str, EventType, float]]) -> Interactions:
    return Interactions.from_rows(
        [(u, i, kind, NOW - age * DAY_SECONDS, float("nan"), "") for u, i, kind, age in rows]
    )


def test_decayed_strength_repeat_trend_and_repeat_rate() -> None:
    events = _events(
        [
            ("u1", "soap", P, 20.0),
            ("u1", "soap", P, 10.0),
            ("u1", "sofa", V, 10.0),
            ("u2", "soap", P, 0.0),
            ("u2", "sofa", P, 30.0),
            ("u2", "lamp", D, 0.0),
        ]
    )
    config = TrainConfig(half_life_days=10.0, item_half_life_days=10.0)
    data = build_training_data(events, config)
    assert data.reference_time == NOW
    users, items = data.users.entities, data.items.entities
    strength = {}
    repeat = {}
    for user in ("u1", "u2"):
        row = users.index(user)
        for position in range(int(data.seen.indptr[row]), int(data.seen.indptr[row + 1])):
            item = items.id_of(int(data.seen.indices[position]))
            strength[user, item] = float(data.seen_strength[position])  # type: ignore[index]
            repeat[user, item] = float(data.seen_repeat[position])  # type: ignore[index]
    # The strongest decayed weight; purchases summed with their decay.
    assert strength["u1", "soap"] == pytest.approx(0.5)
    assert repeat["u1", "soap"] == pytest.approx(0.25 + 0.5)
    assert strength["u1", "sofa"] == pytest.approx(0.25 * 0.5)
    assert repeat["u1", "sofa"] == 0.0  # a view is not a purchase
    assert repeat["u2", "sofa"] == pytest.approx(0.125)
    assert strength["u2", "lamp"] == 0.0  # a dismissal is seen, never positive
    trend = {items.id_of(j): float(v) for j, v in enumerate(data.trend)}  # type: ignore[arg-type]
    assert trend["soap"] == pytest.approx(0.25 + 0.5 + 1.0)
    assert trend["sofa"] == pytest.approx(0.25 * 0.5 + 1.0 * 0.125)
    assert trend["lamp"] == 0.0
    # soap: 2 buyers, 1 bought again; sofa: 1 buyer, none again; overall 1 of 3.
    rate = {items.id_of(j): float(v) for j, v in enumerate(data.repeat_rate)}  # type: ignore[arg-type]
    overall = 1 / 3
    assert rate["soap"] == pytest.approx((1 + REPEAT_PRIOR * overall) / (2 + REPEAT_PRIOR))
    assert rate["sofa"] == pytest.approx((0 + REPEAT_PRIOR * overall) / (1 + REPEAT_PRIOR))
    # The item-to-item votes decay by their own half-life.
    votes_undecayed = build_training_data(events, replace(config, item_half_life_days=None))
    assert votes_undecayed.seen_strength is not None
    assert float(votes_undecayed.seen_strength.max()) == 1.0
    np.testing.assert_array_equal(votes_undecayed.trend, data.trend)  # type: ignore[arg-type]
    # Without a half-life nothing decays.
    flat = build_training_data(events, replace(config, half_life_days=None))
    assert flat.trend is not None
    assert float(flat.trend.sum()) == pytest.approx(3.0 + 1.25)


def test_config_rejects_bad_blend_settings() -> None:
    for field, value in (
        ("half_life_days", 0.0),
        ("item_half_life_days", -1.0),
        ("validation_split", "tomorrow"),
        ("item_item", "slim"),
        ("neighbours", 0),
        ("validation_fraction", 1.0),
        ("knn_shrink", -1.0),
        ("blend_bags", -1),
        ("bag_below", 0),
    ):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small synthetic shop with repeat purchases and trends, and a model trained on it."""
    from shelfrank.datasets.synth import SynthConfig, generate
    from shelfrank.server.hybrid import HybridModel

    data = generate(SynthConfig.shop(items=300, users=600, events=30_000, seed=7))
    config = TrainConfig(epochs=5, components=16, seed=1, num_threads=1, min_validation_users=20)
    model = HybridModel.train(data.interactions, config, items=data.items, users=data.users)
    out = tmp_path_factory.mktemp("shop") / "model"
    model.save(out)
    return out, out


def test_the_blend_is_fitted_saved_and_served(shop: tuple[Path, Path]) -> None:
    from shelfrank.server.hybrid import HybridModel
    from shelfrank.server.offline import recommend_users

    directory, _ = shop
    serving, manifest = load_serving_model(directory)
    assert serving.signals is not None
    report = manifest["blend_fit"]
    assert report["half_life_days"] in (7.0, 14.0, 30.0, 60.0, 120.0, 365.0, None)
    assert set(report["validation_ndcg_at_10_by_half_life"]) >= {"7", "none"}
    repeat = serving.signals.blend.get("trained", "repeat")
    assert repeat.repeat > 0, "a shop with consumables must weigh buying again"
    # Every fit on fewer than bag_below validation shoppers was bagged, and only those.
    counts = report["validation_users"]
    fitted = [f"{segment}/{mode}" for segment, modes in report["weights"].items() for mode in modes]
    small = {f for f in fitted if counts[f.split("/")[0]] < TrainConfig().bag_below}
    small.discard("features/repeat")  # the features segment's repeat weights are its new ones
    assert small
    assert set(report["bagged"]["fits"]) == small
    assert report["bagged"]["bags"] == TrainConfig().blend_bags
    # The reloaded training state carries the same signals (incremental rounds need them).
    model = HybridModel.load(directory)
    assert model.blend == serving.signals.blend
    again = model.to_serving()
    assert again.signals is not None
    np.testing.assert_array_equal(again.signals.trend, serving.signals.trend)
    # Offline serving ranks by the blend: repeat mode keeps bought items, new excludes them.
    user = serving.user_ids.id_of(0)
    seen = set(serving.item_ids.id_of(int(r)) for r in serving.seen_rows(user))
    (with_repeats,) = recommend_users(serving, [user], 10, mode="repeat")
    (fresh,) = recommend_users(serving, [user], 10, exclude_seen=True, mode="new")
    assert not seen & {item for item, _ in fresh.items}
    assert len(with_repeats.items) == 10
    scores = [score for _, score in with_repeats.items]
    assert scores == sorted(scores, reverse=True)
