"""The hybrid LightFM recommender: training, export to the serving model, persistence.

LightFM is used for training only. Serving runs on exported numpy vectors
(:class:`shelfrank.core.serving.ServingModel`), whose scores equal ``LightFM.predict``.
LightFM's ``fit_partial`` is not thread-safe: one model is trained by one thread at a time.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from lightfm import LightFM
from tqdm import tqdm

from shelfrank.core.blend import BlendTable, ItemNeighbours, RankingSignals
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.model_format import (
    read_model_directory,
    save_model_directory,
    serving_model_from,
)
from shelfrank.core.representation import TokenEmbeddings
from shelfrank.core.scoring import ScoringTable
from shelfrank.core.serving import ServingModel, SparseRows
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.cold_start import ColdStartMap, fit_cold_start_map
from shelfrank.server.config import TrainConfig
from shelfrank.server.item_item import item_neighbours
from shelfrank.server.lightfm_params import grown_copy, new_lightfm
from shelfrank.server.model_state import restore_training, training_state_arrays
from shelfrank.server.training_data import TrainingData, build_training_data

EpochCallback = Callable[[int, "HybridModel"], None]


@dataclass(frozen=True, kw_only=True)
class TrainSummary:
    users: int
    items: int
    interactions: int
    epochs: int
    fit_seconds: float
    total_seconds: float

    def __str__(self) -> str:
        return (
            f"trained on {self.interactions} interactions ({self.users} users, {self.items} "
            f"items), {self.epochs} epochs in {self.fit_seconds:.2f}s "
            f"({self.total_seconds:.2f}s with data preparation and export)"
        )


class HybridModel:
    """A trained hybrid model: LightFM state plus the id and feature spaces."""

    def __init__(
        self, config: TrainConfig, data: TrainingData, lightfm: LightFM, model_version: str = ""
    ) -> None:
        self.config = config
        self.data = data
        self.lightfm = lightfm
        self.model_version = model_version
        self.summary: TrainSummary | None = None
        self.cold_start_map: ColdStartMap | None = None
        self._item_cold: TokenEmbeddings | None = None
        self._restored_cold_start: dict[str, Any] = {}
        # Blended ranking (config.blend): weights fitted at training, carried by
        # incremental rounds; neighbours follow the data (None: computed when exported).
        self.blend = BlendTable()
        self.blend_report: dict[str, Any] = {}
        self.neighbours: ItemNeighbours | None = None
        self.item_item_method = "off"
        self._mf_scale: tuple[Any, float] | None = None  # (user vectors it was measured on, scale)

    @classmethod
    def train(
        cls,
        interactions: Interactions,
        config: TrainConfig | None = None,
        *,
        items: FeatureTable | None = None,
        users: FeatureTable | None = None,
        progress: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> HybridModel:
        cfg = config or TrainConfig()
        started = time.perf_counter()
        fitted = None
        if cfg.blend and on_epoch is None:
            fitted = cls._train_blended(interactions, cfg, items, users, progress)
        if fitted is not None:
            model, fit_seconds = fitted
        else:
            data = build_training_data(interactions, cfg, items=items, users=users)
            if data.weights.nnz == 0:
                raise InvalidInputError("interactions: no positive interaction to train on")
            model = cls(cfg, data, new_lightfm(cfg))
            fit_seconds = model.fit(cfg.epochs, progress=progress, on_epoch=on_epoch)
        model.item_cold_start()
        if cfg.blend:
            model.item_neighbours()
        model.model_version = model.content_version()
        model.summary = TrainSummary(
            users=model.data.shape[0],
            items=model.data.shape[1],
            interactions=int(model.data.weights.nnz),
            epochs=cfg.epochs,
            fit_seconds=fit_seconds,
            total_seconds=time.perf_counter() - started,
        )
        return model

    @classmethod
    def _train_blended(
        cls,
        interactions: Interactions,
        config: TrainConfig,
        items: FeatureTable | None,
        users: FeatureTable | None,
        progress: bool,
    ) -> tuple[HybridModel, float] | None:
        """Train on the prefix, fit the blend on the validation split, then continue the
        prefix model on every event for a quarter of the epochs (server/blend_fit.py).
        None when there is no usable validation split."""
        from shelfrank.server.blend_fit import fit_blend, validation_split

        split = validation_split(
            interactions, config.validation_fraction, config.validation_split, config.seed or 0
        )
        if split is None:
            return None
        prefix_events, later = split
        # The prefix serves validation only: LightFM's own item token embeddings suffice for
        # its cold items, and the ridge map is fitted once, for the final model.
        plain = replace(config, blend=False, item_cold_start="lightfm")
        data = build_training_data(prefix_events, plain, items=items, users=users)
        if data.weights.nnz == 0:
            return None
        prefix = cls(plain, data, new_lightfm(plain))
        fit_seconds = prefix.fit(config.epochs, progress=progress)
        prefix.item_cold_start()

        plain_prefix = prefix.plain_serving()  # the LightFM part stays; signals change

        def prefix_serving(
            signals_data: TrainingData, neighbours: ItemNeighbours, blend: BlendTable
        ) -> ServingModel:
            prefix.data, prefix.neighbours, prefix.blend = signals_data, neighbours, blend
            return prefix.with_signals(plain_prefix)

        fit = fit_blend(
            prefix_serving, data, prefix_events, later, config, users, progress=progress
        )
        if fit is None:
            return None
        final_config = replace(
            config,
            half_life_days=fit.half_life_days,
            item_half_life_days=fit.item_half_life_days,
            item_item_l2=fit.item_item_l2,
        )
        prefix.data, prefix.config = data, final_config
        tick = time.perf_counter()
        model = prefix.continued(
            interactions,
            items=items,
            users=users,
            epochs=max(1, math.ceil(config.epochs / 4)),
            progress=progress,
        )
        fit_seconds += time.perf_counter() - tick
        model.blend = fit.blend
        model.blend_report = fit.to_json()
        return model, fit_seconds

    def continued(
        self,
        interactions: Interactions,
        *,
        items: FeatureTable | None = None,
        users: FeatureTable | None = None,
        epochs: int = 5,
        progress: bool = False,
    ) -> HybridModel:
        """A new model: this one continued for ``epochs`` on ``interactions`` (all events
        to learn from, old and new), grown for new users, items and tokens; this model is
        left untouched."""
        if epochs < 1:
            raise InvalidInputError(f"epochs: must be >= 1, got {epochs}")
        config = self.config
        data = build_training_data(
            interactions, config, items=items, users=users, previous=self.data
        )
        if data.weights.nnz == 0:
            raise InvalidInputError("interactions: no positive interaction to train on")
        lightfm = grown_copy(
            self.lightfm, config, len(data.users.features), len(data.items.features)
        )
        model = HybridModel(config, data, lightfm)
        model.blend, model.blend_report = self.blend, self.blend_report
        model.fit(epochs, progress=progress)
        model.item_cold_start()
        model.model_version = model.content_version()
        return model

    def item_neighbours(self) -> ItemNeighbours:
        """The item-to-item neighbours of the current data (computed once)."""
        if self.neighbours is None or self.neighbours.items != len(self.data.items.entities):
            self.neighbours, self.item_item_method = item_neighbours(
                self.data.weights,
                method=self.config.item_item if self.blend.weights else "off",
                l2=self.config.item_item_l2 or 200.0,
                shrink=self.config.knn_shrink,
                top_n=self.config.neighbours,
            )
        return self.neighbours

    def fit(
        self, epochs: int, *, progress: bool = False, on_epoch: EpochCallback | None = None
    ) -> float:
        """Run ``epochs`` more epochs; returns the seconds spent inside LightFM."""
        self._item_cold = None  # the cold-start map follows the learned vectors
        self.cold_start_map = None
        user_features = self.data.users.matrix()
        item_features = self.data.items.matrix()
        interactions = self.data.weights
        weights = None if self.config.loss == "warp-kos" else interactions
        spent = 0.0
        bar = tqdm(total=epochs, desc="training", unit="epoch", disable=not progress, leave=False)
        try:
            for epoch in range(epochs):
                tick = time.perf_counter()
                self.lightfm.fit_partial(
                    interactions,
                    user_features=user_features,
                    item_features=item_features,
                    sample_weight=weights,
                    epochs=1,
                    num_threads=self.config.num_threads,
                )
                spent += time.perf_counter() - tick
                bar.update(1)
                if on_epoch is not None:
                    on_epoch(epoch + 1, self)
        finally:
            bar.close()
        return spent

    # -- export -----------------------------------------------------------------------------
    def _lightfm_representations(
        self, side: str
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Exactly LightFM's representations (``get_*_representations``)."""
        space = self.data.users if side == "user" else self.data.items
        matrix = space.matrix()
        embeddings = getattr(self.lightfm, f"{side}_embeddings")
        biases = getattr(self.lightfm, f"{side}_biases")
        return (
            np.asarray(matrix @ embeddings, dtype=np.float32),
            np.asarray(matrix @ biases, dtype=np.float32),
        )

    def _positive_counts(self, side: str) -> npt.NDArray[np.int64]:
        axis = 1 if side == "user" else 0
        return np.asarray((self.data.weights > 0).sum(axis=axis)).ravel().astype(np.int64)

    def lightfm_token_embeddings(self, side: str) -> TokenEmbeddings:
        """LightFM's own token embeddings, composed with their training weights."""
        space = self.data.users if side == "user" else self.data.items
        vocabulary, columns = space.token_vocabulary()
        return TokenEmbeddings(
            vocabulary,
            getattr(self.lightfm, f"{side}_embeddings")[columns].astype(np.float32),
            getattr(self.lightfm, f"{side}_biases")[columns].astype(np.float32),
            identity_weight=self.config.identity_weight,
        )

    def item_cold_start(self) -> TokenEmbeddings:
        """How item tokens become a vector: by default the ridge map from tokens to
        learned item vectors (fitted once per training state, see
        :mod:`shelfrank.server.cold_start`), else LightFM's token embeddings."""
        if self._item_cold is None and self.config.item_cold_start == "lightfm":
            self._item_cold = self.lightfm_token_embeddings("item")
        if self._item_cold is None:
            vocabulary, _ = self.data.items.token_vocabulary()
            indptr, indices = self.data.items.token_rows()
            token_rows = sp.csr_matrix(
                (np.ones(indices.size), indices, indptr),
                shape=(len(self.data.items.entities), len(vocabulary)),
            )
            item_vectors, item_biases = self._lightfm_representations("item")
            user_vectors, _ = self._lightfm_representations("user")
            self.cold_start_map = fit_cold_start_map(
                token_rows,
                item_vectors,
                item_biases,
                self._positive_counts("item") > 0,
                user_vectors,
                sp.csr_matrix(self.data.weights),
                seed=self.config.seed or 0,
            )
            self._item_cold = TokenEmbeddings(
                vocabulary,
                self.cold_start_map.token_vectors,
                self.cold_start_map.token_biases,
                identity_weight=self.config.identity_weight,
                weighting="unit",
            )
        return self._item_cold

    def _served_representations(
        self, side: str, tokens: TokenEmbeddings
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """LightFM's representations, except for entities without any positive training
        interaction: their identity embedding was never pulled towards anything (at most
        pushed away as a WARP negative), so they are served from their metadata tokens
        alone, exactly as a brand-new entity would be (cold start)."""
        space = self.data.users if side == "user" else self.data.items
        vectors, biases = self._lightfm_representations(side)
        for row in np.flatnonzero(self._positive_counts(side) == 0).tolist():
            entity_tokens = space.tokens_of(row)
            if entity_tokens:
                vectors[row], biases[row] = tokens.compose(entity_tokens)
        return vectors, biases

    def to_serving(self) -> ServingModel:
        base = self.plain_serving()
        if not self.config.blend or self.data.trend is None:
            return base
        return self.with_signals(base)

    def with_signals(self, base: ServingModel) -> ServingModel:
        """``base`` (this model's plain serving model) with the ranking signals of the
        current data, neighbours and blend."""
        data = self.data
        if data.trend is None or data.repeat_rate is None:
            raise InvalidInputError("training data without time signals")
        signals = RankingSignals(
            trend=data.trend,
            repeat_rate=data.repeat_rate,
            neighbours=self.item_neighbours(),
            blend=self.blend,
            mf_scale=self._scale_of(base),
            segment_trend=data.segment_trend,
        )
        token_indptr, token_indices = data.users.token_rows()
        return replace(
            base,
            item_popularity=data.trend,
            signals=signals,
            seen_strength=data.seen_strength,
            seen_repeat=data.seen_repeat,
            user_token_rows=SparseRows(token_indptr, token_indices),
        )

    def _scale_of(self, base: ServingModel) -> float:
        from shelfrank.server.blend_fit import mf_scale

        cached = self._mf_scale
        if cached is None or cached[0] is not base.user_vectors:
            cached = self._mf_scale = (base.user_vectors, mf_scale(base))
        return cached[1]

    def plain_serving(self) -> ServingModel:
        """The serving model ranking by the LightFM score alone."""
        item_tokens = self.item_cold_start()
        user_tokens = self.lightfm_token_embeddings("user")
        item_vectors, item_biases = self._served_representations("item", item_tokens)
        user_vectors, user_biases = self._served_representations("user", user_tokens)
        indptr, indices = self.data.items.token_rows()
        return ServingModel(
            items=ScoringTable(self.data.items.entities.copy(), item_vectors, item_biases),
            item_tokens=SparseRows(indptr, indices),
            item_token_embeddings=item_tokens,
            user_ids=self.data.users.entities.copy(),
            user_vectors=user_vectors,
            user_biases=user_biases,
            user_token_embeddings=user_tokens,
            item_popularity=self.data.popularity,
            seen=self.data.seen,
            fold_in=self.config.fold_in,
            model_version=self.model_version,
        )

    def content_version(self) -> str:
        """A version id: UTC time plus a hash of the learned parameters."""
        digest = hashlib.sha256()
        for name in ("item_embeddings", "item_biases", "user_embeddings", "user_biases"):
            digest.update(np.ascontiguousarray(getattr(self.lightfm, name)).tobytes())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{stamp}-{digest.hexdigest()[:10]}"

    # -- persistence ------------------------------------------------------------------------
    def save(
        self, directory: str | Path, extra_metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        metadata = {
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "params": self.config.to_json(),
            "training": {"interactions": int(self.data.weights.nnz)},
            "cold_start": self._cold_start_metadata(),
            "blend_fit": self.blend_report,
            **(extra_metadata or {}),
        }
        return save_model_directory(
            directory,
            self.to_serving(),
            metadata=metadata,
            extra_groups={"training": training_state_arrays(self.lightfm, self.data)},
        )

    def _cold_start_metadata(self) -> dict[str, Any]:
        self.item_cold_start()
        info = self.cold_start_map
        if self.config.item_cold_start == "lightfm":
            return {"items": {"method": "LightFM token embeddings with training weights"}}
        if info is None:  # restored from disk: the map is in serving.npz, its facts here
            return self._restored_cold_start
        return {
            "items": {
                "method": "ridge map from 0/1 tokens to learned [vector, bias]",
                "l2": info.l2,
                "validation_precision_at_10": {
                    str(k): round(v, 5) for k, v in info.validation.items()
                },
            },
            "users": {"method": "LightFM token embeddings with training weights"},
        }

    @classmethod
    def load(cls, directory: str | Path) -> HybridModel:
        artifact = read_model_directory(directory)
        serving = serving_model_from(artifact)  # validates the serving half too
        config, data, lightfm = restore_training(artifact)
        model = cls(
            config, data, lightfm, model_version=str(artifact.manifest.get("model_version", ""))
        )
        if model.config.item_cold_start == "ridge":
            model._item_cold = serving.item_token_embeddings
            model._restored_cold_start = dict(artifact.manifest.get("cold_start", {}))
        if serving.signals is not None:
            model.blend = serving.signals.blend
            model.neighbours = serving.signals.neighbours
            model.blend_report = dict(artifact.manifest.get("blend_fit", {}))
            model.data.seen_strength = serving.seen_strength
            model.data.seen_repeat = serving.seen_repeat
            model.data.trend = serving.signals.trend
            model.data.repeat_rate = serving.signals.repeat_rate
            model.data.segment_trend = serving.signals.segment_trend
        return model


def predict_matrix(
    model: HybridModel, user_rows: npt.NDArray[np.int64], item_rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """LightFM's own prediction for (user, item) pairs (reference for tests)."""
    scores = model.lightfm.predict(
        user_rows.astype(np.int32),
        item_rows.astype(np.int32),
        user_features=model.data.users.matrix(),
        item_features=model.data.items.matrix(),
        num_threads=1,
    )
    return np.asarray(scores, dtype=np.float32)


__all__ = ["HybridModel", "TrainSummary", "predict_matrix"]
