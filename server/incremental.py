"""Incremental training: continue an existing model on new events, with room for new
users, items and tokens.

LightFM's ``fit_partial`` needs feature matrices of the shape it was first fitted with;
new entities and tokens append feature columns (feature spaces are append-only), so the
model's parameter arrays are grown with rows initialised exactly as LightFM initialises
them (small uniform embeddings, zero biases, optimiser accumulators reset for adagrad),
and training continues from the previous optimiser state for the old rows.
"""

from __future__ import annotations

import numpy as np
from lightfm import LightFM

from shelfrank.core.errors import InvalidInputError
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.hybrid import HybridModel, new_lightfm
from shelfrank.server.training_data import build_training_data


def _grow(model: LightFM, side: str, rows: int, schedule: str, rng: np.random.RandomState) -> None:
    embeddings = getattr(model, f"{side}_embeddings")
    extra = rows - embeddings.shape[0]
    if extra < 0:
        raise InvalidInputError(
            f"{side} features: cannot shrink from {embeddings.shape[0]} to {rows}"
        )
    if extra == 0:
        return
    components = embeddings.shape[1]
    fresh = ((rng.rand(extra, components) - 0.5) / components).astype(np.float32)
    accumulator = 1.0 if schedule == "adagrad" else 0.0
    grown = {
        f"{side}_embeddings": fresh,
        f"{side}_embedding_gradients": np.full((extra, components), accumulator, np.float32),
        f"{side}_embedding_momentum": np.zeros((extra, components), np.float32),
        f"{side}_biases": np.zeros(extra, np.float32),
        f"{side}_bias_gradients": np.full(extra, accumulator, np.float32),
        f"{side}_bias_momentum": np.zeros(extra, np.float32),
    }
    for name, tail in grown.items():
        setattr(model, name, np.ascontiguousarray(np.concatenate([getattr(model, name), tail])))


def continue_training(
    previous: HybridModel,
    interactions: Interactions,
    *,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    epochs: int = 5,
    progress: bool = False,
) -> HybridModel:
    """A new model: ``previous`` continued for ``epochs`` on ``interactions`` (all events
    to learn from, old and new). ``previous`` itself is left untouched."""
    if epochs < 1:
        raise InvalidInputError(f"epochs: must be >= 1, got {epochs}")
    config = previous.config
    data = build_training_data(
        interactions, config, items=items, users=users, previous=previous.data
    )
    if data.weights.nnz == 0:
        raise InvalidInputError("interactions: no positive interaction to train on")
    lightfm = new_lightfm(config)
    for name, value in vars(previous.lightfm).items():
        if isinstance(value, np.ndarray):
            setattr(lightfm, name, value.copy())
    rng = np.random.RandomState(config.seed)
    _grow(lightfm, "user", len(data.users.features), config.learning_schedule, rng)
    _grow(lightfm, "item", len(data.items.features), config.learning_schedule, rng)
    model = HybridModel(config, data, lightfm)
    model.blend, model.blend_report = previous.blend, previous.blend_report
    model.fit(epochs, progress=progress)
    model.item_cold_start()
    model.model_version = model.content_version()
    return model
