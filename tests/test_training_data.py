from __future__ import annotations

import numpy as np
import pytest

from shelfrank.datasets.records import FeatureTable
from shelfrank.server.config import TrainConfig
from shelfrank.server.feature_space import FeatureSpace
from shelfrank.server.training_data import build_training_data
from tests.conftest import make_interactions


def _weights(rows: list[tuple[str, str, str]]) -> dict[tuple[str, str], float]:
    data = build_training_data(make_interactions(rows), TrainConfig())
    matrix = data.weights.tocsr()
    return {
        (data.users.entities.id_of(u), data.items.entities.id_of(i)): float(matrix[u, i])
        for u, i in zip(*matrix.nonzero(), strict=True)
    }


def test_strongest_signal_per_pair_wins() -> None:
    weights = _weights(
        [("u", "a", "view"), ("u", "a", "purchase"), ("u", "a", "view"), ("u", "b", "add_to_cart")]
    )
    assert weights == {("u", "a"): 1.0, ("u", "b"): 0.5}


def test_dismissal_is_never_positive_and_cancels_weak_signals_only() -> None:
    weights = _weights(
        [
            ("u", "a", "view"),
            ("u", "a", "dismiss"),
            ("u", "b", "purchase"),
            ("u", "b", "dismiss"),
            ("u", "c", "dismiss"),
        ]
    )
    assert weights == {("u", "b"): 1.0}
    data = build_training_data(
        make_interactions([("u", "a", "view"), ("u", "c", "dismiss")]), TrainConfig()
    )
    assert sorted(data.items.entities.id_of(int(r)) for r in data.seen.row(0)) == ["a", "c"]


def test_explicit_weight_overrides_type_weight_and_popularity_sums() -> None:
    table = make_interactions([("u1", "a", "view"), ("u2", "a", "purchase")])
    table.weights[0] = 3.0
    data = build_training_data(table, TrainConfig())
    assert data.popularity.tolist() == [4.0]


def test_catalogue_items_without_events_are_indexed() -> None:
    items = FeatureTable("item_id", ("c",), ["x", "y"], [("c=1",), ()])
    data = build_training_data(make_interactions([("u", "z", "view")]), TrainConfig(), items=items)
    assert list(data.items.entities) == ["x", "y", "z"]
    assert data.popularity.tolist() == [0.0, 0.0, 0.25]


def test_feature_rows_are_normalised_with_identity_weight() -> None:
    space = FeatureSpace(identity_weight=3.0)
    space.add("a", ["c=1", "d=2"])
    space.add("b")
    matrix = space.matrix().toarray()
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert matrix[0, space.features.index("id:a")] == pytest.approx(0.6)
    assert matrix[0, space.features.index("tok:c=1")] == pytest.approx(0.2)
    assert matrix[1, space.features.index("id:b")] == pytest.approx(1.0)
    # new entities and tokens only append columns
    before = list(space.features)
    space.add("c", ["e=3"])
    assert list(space.features)[: len(before)] == before


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="components: must be >= 1"):
        TrainConfig(components=0)
    with pytest.raises(ValueError, match="loss: must be one of"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=-1)
    round_trip = TrainConfig.from_json(TrainConfig(seed=3, epochs=5).to_json())
    assert round_trip == TrainConfig(seed=3, epochs=5, num_threads=round_trip.num_threads)
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_json({"epochz": 3})
