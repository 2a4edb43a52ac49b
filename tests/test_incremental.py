from __future__ import annotations

import numpy as np
import pytest

from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel, predict_matrix
from tests.conftest import make_interactions

Shop = tuple[Interactions, FeatureTable, FeatureTable]


def test_continue_training_grows_for_new_users_items_and_tokens(toy_shop: Shop) -> None:
    interactions, items, users = toy_shop
    base = HybridModel.train(
        interactions,
        TrainConfig(components=8, epochs=10, seed=1, num_threads=1),
        items=items,
        users=users,
    )
    before = base.lightfm.item_embeddings.copy()
    new_rows = make_interactions(
        [("newbie", f"book{i}", "purchase") for i in range(6)]
        + [("u0", "hat1", "purchase"), ("u1", "hat1", "view")]
    )
    more_items = FeatureTable("item_id", ("category",), ["hat1"], [("category=hats",)])
    model = base.continued(
        Interactions.concat([interactions, new_rows]), items=more_items, epochs=5
    )

    assert np.array_equal(base.lightfm.item_embeddings, before)  # the previous model is untouched
    assert list(model.data.items.entities)[: len(base.data.items.entities)] == list(
        base.data.items.entities
    )
    assert list(model.data.users.features)[: len(base.data.users.features)] == list(
        base.data.users.features
    )
    assert model.lightfm.item_embeddings.shape[0] == len(model.data.items.features)
    assert "hat1" in model.data.items.entities
    assert "tok:category=hats" in model.data.items.features

    serving = model.to_serving()
    newbie = serving.user_vector("newbie")
    assert newbie.source == "trained"
    scores = serving.items.scores(newbie.vector, newbie.bias)  # type: ignore[arg-type]
    books = [serving.item_ids.index(f"book{i}") for i in range(16)]
    shoes = [serving.item_ids.index(f"shoe{i}") for i in range(16)]
    assert scores[books].mean() > scores[shoes].mean()
    warm = np.flatnonzero(model.data.popularity > 0)[:20]
    rows = np.arange(len(serving.user_ids))
    uu, ii = np.meshgrid(rows, warm, indexing="ij")
    expected = predict_matrix(model, uu.ravel(), ii.ravel()).reshape(uu.shape)
    assert (
        np.abs(
            serving.items.scores_many(serving.user_vectors, serving.user_biases)[:, warm] - expected
        ).max()
        < 1e-4
    )


def test_continue_training_validates_epochs(toy_shop: Shop) -> None:
    interactions, _, _ = toy_shop
    base = HybridModel.train(
        interactions, TrainConfig(components=4, epochs=1, seed=1, num_threads=1)
    )
    with pytest.raises(ValueError, match="epochs"):
        base.continued(interactions, epochs=0)
