"""Recommenders compared in one evaluation run, behind one small interface.

Every recommender scores items for users in the shared index space of a
:class:`~shelfrank.server.training_data.TrainingData` (users x items), so the evaluator
treats the hybrid model and the baselines identically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shelfrank.core.blend import blended_scores
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.serving import ServingModel
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.item_item import ease_weights
from shelfrank.server.training_data import TrainingData

FloatMatrix = npt.NDArray[np.float32]


class Recommender(ABC):
    """Scores a batch of users against every item of the shared index space."""

    name: str

    @abstractmethod
    def score(self, user_rows: npt.NDArray[np.int64]) -> FloatMatrix:
        """(len(user_rows), n_items) scores; higher is better."""


class ServingRecommender(Recommender):
    """A trained model served the way production serves it: exported numpy vectors."""

    def __init__(self, name: str, serving: ServingModel) -> None:
        self.name = name
        self.serving = serving

    def score(self, user_rows: npt.NDArray[np.int64]) -> FloatMatrix:
        serving = self.serving
        if serving.signals is None:
            return serving.items.scores_many(
                serving.user_vectors[user_rows], serving.user_biases[user_rows]
            )
        out = np.empty((user_rows.size, len(serving.items)), np.float32)
        weights = serving.signals.blend.get("trained", "new")
        for position, row in enumerate(user_rows.tolist()):
            user = serving.user_vector(serving.user_ids.id_of(row))
            out[position] = blended_scores(
                serving.items, serving.signals, user.vector, user.bias, user.history, weights
            )
        return out


class EaseRecommender(Recommender):
    """EASE (Steck 2019) on the training matrix, with a given lambda."""

    name = "ease"

    def __init__(self, data: TrainingData, l2: float) -> None:
        self.matrix = sp.csr_matrix(data.weights, dtype=np.float64)
        self.weights = ease_weights(self.matrix, l2)

    def score(self, user_rows: npt.NDArray[np.int64]) -> FloatMatrix:
        return np.asarray(self.matrix[user_rows] @ self.weights, dtype=np.float32)


class PopularityRecommender(Recommender):
    """Most popular first. Ties are broken at random (seeded) rather than by row, so the
    catalogue's own order (often itself popularity-sorted) cannot leak into the baseline,
    e.g. among cold items, which all have popularity 0."""

    name = "popularity"

    def __init__(self, data: TrainingData, seed: int = 0) -> None:
        popularity = data.popularity.astype(np.float64)
        values = np.unique(popularity)
        gap = float(np.diff(values).min()) if values.size > 1 else 1.0
        jitter = np.random.default_rng(seed).random(popularity.size) * gap * 0.5
        self.popularity = (popularity + jitter).astype(np.float32)

    def score(self, user_rows: npt.NDArray[np.int64]) -> FloatMatrix:
        return np.tile(self.popularity, (user_rows.size, 1))


class UserKnnRecommender(Recommender):
    """User-based collaborative filtering: cosine similarity over the interaction matrix,
    the ``neighbours`` most similar users vote with their similarity."""

    name = "user-knn"

    def __init__(self, data: TrainingData, neighbours: int = 50) -> None:
        if neighbours < 1:
            raise InvalidInputError(f"neighbours: must be >= 1, got {neighbours}")
        matrix = sp.csr_matrix(data.weights, dtype=np.float32)
        matrix.data[:] = 1.0  # cosine over who interacted with what
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        self.matrix = matrix
        self.normalised = sp.csr_matrix(sp.diags(1.0 / norms) @ matrix, dtype=np.float32)
        self.neighbours = neighbours

    def score(self, user_rows: npt.NDArray[np.int64]) -> FloatMatrix:
        similarity = np.asarray(
            (self.normalised[user_rows] @ self.normalised.T).todense(), dtype=np.float32
        )
        similarity[np.arange(user_rows.size), user_rows] = 0.0  # not your own neighbour
        keep = min(self.neighbours, similarity.shape[1])
        if keep < similarity.shape[1]:
            cutoff = np.partition(similarity, -keep, axis=1)[:, -keep][:, None]
            similarity[similarity < cutoff] = 0.0
        return np.asarray(self.matrix.T @ similarity.T, dtype=np.float32).T


def train_hybrid(
    train: Interactions,
    config: TrainConfig,
    items: FeatureTable | None,
    users: FeatureTable | None,
    *,
    progress: bool,
) -> HybridModel:
    return HybridModel.train(train, config, items=items, users=users, progress=progress)


def pure_cf_config(config: TrainConfig) -> TrainConfig:
    """The same settings with identity features only (plain collaborative LightFM)."""
    return replace(config, use_item_features=False, use_user_features=False, blend=False)
