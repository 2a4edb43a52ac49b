"""LightFM's parameters as plain arrays: a new model from a configuration, its state
for saving, and growing it for new users, items and tokens.

LightFM's ``fit_partial`` needs feature matrices of the shape it was first fitted with;
new entities and tokens append feature columns (feature spaces are append-only), so the
parameter arrays are grown with rows initialised exactly as LightFM initialises them
(small uniform embeddings, zero biases, optimiser accumulators reset for adagrad), and
training continues from the previous optimiser state for the old rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from lightfm import LightFM

from shelfrank.core.errors import InvalidInputError
from shelfrank.server.config import TrainConfig

# What a saved model keeps of LightFM: enough to continue training where it stopped.
STATE_ARRAYS = (
    "item_embeddings",
    "item_embedding_gradients",
    "item_embedding_momentum",
    "item_biases",
    "item_bias_gradients",
    "item_bias_momentum",
    "user_embeddings",
    "user_embedding_gradients",
    "user_embedding_momentum",
    "user_biases",
    "user_bias_gradients",
    "user_bias_momentum",
)


def new_lightfm(config: TrainConfig) -> LightFM:
    return LightFM(
        no_components=config.components,
        loss=config.loss,
        learning_schedule=config.learning_schedule,
        learning_rate=config.learning_rate,
        rho=config.rho,
        epsilon=config.epsilon,
        item_alpha=config.item_alpha,
        user_alpha=config.user_alpha,
        max_sampled=config.max_sampled,
        random_state=np.random.RandomState(config.seed),
    )


def lightfm_state(model: LightFM) -> dict[str, npt.NDArray[Any]]:
    return {name: getattr(model, name) for name in STATE_ARRAYS}


def grow(model: LightFM, side: str, rows: int, schedule: str, rng: np.random.RandomState) -> None:
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


def grown_copy(previous: LightFM, config: TrainConfig, user_rows: int, item_rows: int) -> LightFM:
    """A new LightFM holding ``previous``'s parameters (copied), grown to the given numbers
    of user and item feature rows."""
    lightfm = new_lightfm(config)
    for name, value in vars(previous).items():
        if isinstance(value, np.ndarray):
            setattr(lightfm, name, value.copy())
    rng = np.random.RandomState(config.seed)
    grow(lightfm, "user", user_rows, config.learning_schedule, rng)
    grow(lightfm, "item", item_rows, config.learning_schedule, rng)
    return lightfm


__all__ = ["STATE_ARRAYS", "grow", "grown_copy", "lightfm_state", "new_lightfm"]
