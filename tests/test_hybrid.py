"""The hybrid model: exact scoring, persistence, determinism, cold start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shelfrank.core.errors import ModelFileError, UnsupportedFormatError
from shelfrank.core.model_format import load_serving_model
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel, predict_matrix
from shelfrank.server.offline import recommend_users

Shop = tuple[Interactions, FeatureTable, FeatureTable]


@pytest.fixture(scope="module")
def model(toy_shop: Shop) -> HybridModel:
    interactions, items, users = toy_shop
    return HybridModel.train(
        interactions,
        TrainConfig(components=8, epochs=20, seed=5, num_threads=1),
        items=items,
        users=users,
    )


def test_scores_equal_lightfm_predict(model: HybridModel) -> None:
    serving = model.to_serving()
    warm = np.flatnonzero(model.data.popularity > 0)
    users = np.arange(len(serving.user_ids))
    uu, ii = np.meshgrid(users, warm, indexing="ij")
    expected = predict_matrix(model, uu.ravel(), ii.ravel()).reshape(uu.shape)
    ours = serving.items.scores_many(serving.user_vectors, serving.user_biases)[:, warm]
    assert np.abs(expected - ours).max() < 1e-4


def test_items_without_interactions_are_served_from_their_features(model: HybridModel) -> None:
    serving = model.to_serving()
    cold = serving.item_ids.index("shoe15")  # in the catalogue, never in the events
    assert model.data.popularity[cold] == 0
    vector, bias = serving.item_token_embeddings.compose(["category=shoes"])
    assert np.allclose(serving.items.item_vectors[cold], vector)
    assert serving.items.item_biases[cold] == pytest.approx(bias)


def test_save_load_gives_identical_scores(model: HybridModel, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    serving, manifest = load_serving_model(tmp_path / "m")
    original = model.to_serving()
    assert manifest["model_version"] == model.model_version
    assert np.array_equal(
        serving.items.scores_many(serving.user_vectors, serving.user_biases),
        original.items.scores_many(original.user_vectors, original.user_biases),
    )
    restored = HybridModel.load(tmp_path / "m")
    assert np.array_equal(
        restored.lightfm.item_embedding_gradients, model.lightfm.item_embedding_gradients
    )
    assert list(restored.data.items.features) == list(model.data.items.features)
    # training can continue from the restored state
    restored.fit(1)


def test_tampered_truncated_and_future_models_never_load(
    model: HybridModel, tmp_path: Path
) -> None:
    model.save(tmp_path / "m")
    serving_file = tmp_path / "m" / "serving.npz"
    blob = bytearray(serving_file.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    serving_file.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match=r"serving\.npz: sha256 does not match"):
        load_serving_model(tmp_path / "m")
    model.save(tmp_path / "t")
    training_file = tmp_path / "t" / "training.npz"
    training_file.write_bytes(training_file.read_bytes()[:100])
    with pytest.raises(ModelFileError, match=r"training\.npz: size is 100 bytes"):
        HybridModel.load(tmp_path / "t")
    model.save(tmp_path / "f")
    manifest = tmp_path / "f" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": 2}))
    with pytest.raises(UnsupportedFormatError, match="upgrade shelfrank"):
        load_serving_model(tmp_path / "f")


def test_seed_with_one_thread_is_bit_identical(toy_shop: Shop, tmp_path: Path) -> None:
    interactions, items, users = toy_shop
    config = TrainConfig(components=8, epochs=5, seed=11, num_threads=1)
    a = HybridModel.train(interactions, config, items=items, users=users)
    b = HybridModel.train(interactions, config, items=items, users=users)
    for name in ("item_embeddings", "user_embeddings", "item_biases", "item_embedding_gradients"):
        assert getattr(a.lightfm, name).tobytes() == getattr(b.lightfm, name).tobytes()
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    for name in ("serving.npz", "training.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    c = HybridModel.train(
        interactions,
        TrainConfig(components=8, epochs=5, seed=12, num_threads=1),
        items=items,
        users=users,
    )
    assert c.lightfm.item_embeddings.tobytes() != a.lightfm.item_embeddings.tobytes()


def test_cold_start_paths(model: HybridModel) -> None:
    serving = model.to_serving()
    shoes = {f"shoe{i}" for i in range(16)}
    # a new user with features only
    runner = next(
        recommend_users(serving, ["new-runner"], 5, user_tokens={"new-runner": ["segment=runner"]})
    )
    assert runner.source == "features"
    assert sum(item in shoes for item, _ in runner.items) >= 4
    # a new user with a short history of books
    rows = serving.item_rows(["book1", "book2", "book4"])
    reader = next(
        recommend_users(
            serving,
            ["new-reader"],
            5,
            exclude_seen=True,
            histories={"new-reader": (rows, np.full(3, 0.25, np.float32))},
        )
    )
    assert reader.source == "fold-in"
    assert all(item.startswith("book") for item, _ in reader.items)
    assert not {"book1", "book2", "book4"} & {item for item, _ in reader.items}
    # a user we know nothing about gets the popularity list
    stranger = next(recommend_users(serving, ["stranger"], 3))
    top_popular = np.argsort(-serving.item_popularity, kind="stable")[:3]
    assert stranger.source == "popularity"
    assert [item for item, _ in stranger.items] == [
        serving.item_ids.id_of(int(r)) for r in top_popular
    ]


def test_known_user_exclusions_and_candidates(model: HybridModel) -> None:
    serving = model.to_serving()
    seen = {serving.item_ids.id_of(int(r)) for r in serving.seen_rows("u0")}
    rec = next(recommend_users(serving, ["u0"], 50, exclude_seen=True))
    assert rec.source == "trained"
    assert seen
    assert not seen & {i for i, _ in rec.items}
    picked = next(
        recommend_users(serving, ["u0"], 10, candidate_item_ids=["book3", "shoe3", "nope"])
    )
    assert sorted(i for i, _ in picked.items) == ["book3", "shoe3"]
    assert picked.items[0][0] == "shoe3"  # u0 is a shoe buyer


def test_training_without_positives_is_refused() -> None:
    from tests.conftest import make_interactions

    with pytest.raises(ValueError, match="no positive interaction"):
        HybridModel.train(make_interactions([("u", "a", "dismiss")]), TrainConfig(epochs=1))
