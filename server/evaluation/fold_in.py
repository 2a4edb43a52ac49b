"""Fold-in evaluation: how good are users folded in at request time, compared with the
same users trained into the model?

A seeded set of users with relevant test items is dropped from training. A second model
is trained without them; at scoring time each dropped user's training rows are their
history, folded in against the fixed item vectors. Both models rank for those users;
the ratio of their metrics is the price of not retraining.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from shelfrank.core.blend import blended_scores
from shelfrank.core.errors import InvalidInputError, InvariantError
from shelfrank.core.events import POSITIVE_EVENT_TYPES, EventType
from shelfrank.core.serving import ServingModel
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation.baselines import Recommender, ServingRecommender
from shelfrank.server.evaluation.fairness import (
    FairnessContext,
    FairnessSettings,
    check_settings,
)
from shelfrank.server.evaluation.runner import (
    EvaluationReport,
    ModelResult,
    relevance,
    score_users,
)
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.training_data import TrainingData, event_weights

History = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


class FoldInRecommender(Recommender):
    """Scores users of the full index space with a model that never saw them."""

    name = "hybrid-fold-in"

    def __init__(
        self,
        serving: ServingModel,
        data: TrainingData,
        histories: dict[int, History],
        user_tokens: dict[str, tuple[str, ...]],
        *,
        use_history: bool = True,
    ) -> None:
        self.serving = serving
        self.data = data
        self.histories = histories
        self.user_tokens = user_tokens
        self.use_history = use_history
        if not use_history:
            self.name = "hybrid-features-only"

    def score(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        out = np.empty((user_rows.size, len(self.serving.items)), dtype=np.float32)
        for position, row in enumerate(user_rows.tolist()):
            user_id = self.data.users.entities.id_of(row)
            rows, weights = self.histories.get(
                row, (np.empty(0, np.int64), np.empty(0, np.float32))
            )
            if not self.use_history:
                rows, weights = rows[:0], weights[:0]
            vector = self.serving.user_vector(
                user_id,
                tokens=self.user_tokens.get(user_id, ()),
                history_rows=rows,
                history_weights=weights,
            )
            signals = self.serving.signals
            if signals is not None:
                blend = signals.blend.get(vector.source, "new")
                out[position] = blended_scores(
                    self.serving.items,
                    signals,
                    vector.vector,
                    vector.bias,
                    vector.history,
                    blend if vector.vector is not None else replace(blend, trend=1.0),
                )
            elif vector.vector is None:
                out[position] = self.serving.item_popularity
            else:
                out[position] = self.serving.items.scores(vector.vector, vector.bias)
        return out


def histories_for(
    interactions: Interactions, config: TrainConfig, serving: ServingModel
) -> dict[str, History]:
    """Each user's history as (item rows of ``serving``, signed weights): dismissals
    count with a negative weight, unknown items are skipped."""
    weights = event_weights(interactions, config)
    dismiss = interactions.event_types == int(EventType.DISMISS)
    weights = np.where(dismiss, -config.event_weights[EventType.VIEW], weights)
    grouped: dict[str, tuple[list[int], list[float]]] = {}
    for index in range(len(interactions)):
        row = serving.item_ids.get(interactions.item_ids[index])
        if row is None:
            continue
        rows, values = grouped.setdefault(interactions.user_ids[index], ([], []))
        rows.append(row)
        values.append(float(weights[index]))
    return {u: (np.array(r, np.int64), np.array(w, np.float32)) for u, (r, w) in grouped.items()}


def evaluate_fold_in(
    train: Interactions,
    test: Interactions,
    config: TrainConfig,
    *,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    fold_users: int = 100,
    seed: int = 0,
    k: int = 10,
    relevant: Collection[EventType] = POSITIVE_EVENT_TYPES,
    progress: bool = False,
    fairness: FairnessSettings | None = None,
) -> EvaluationReport:
    if fold_users < 1:
        raise InvalidInputError(f"fold_users: must be >= 1, got {fold_users}")
    if fairness is not None:
        check_settings(fairness, users, items)
    full = HybridModel.train(train, config, items=items, users=users, progress=progress)
    truth, dropped = relevance(test, full.data, relevant)
    candidates = sorted(truth)
    if len(candidates) < fold_users:
        raise InvalidInputError(
            f"fold_users: only {len(candidates)} users have relevant test items"
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(np.array(candidates), size=fold_users, replace=False))
    chosen_ids = {full.data.users.entities.id_of(int(r)) for r in chosen}
    truth = {int(r): truth[int(r)] for r in chosen}
    keep = np.fromiter((u not in chosen_ids for u in train.user_ids), bool, len(train))
    # The users stay in the catalogue (their metadata), not in the training events.
    reduced = HybridModel.train(
        train.take(keep), config, items=items, users=_without(users, chosen_ids), progress=progress
    )
    reduced_serving = reduced.to_serving()
    if list(reduced.data.items.entities) != list(full.data.items.entities):
        raise InvariantError("the reduced model indexed items differently")
    by_user = histories_for(train.take(~keep), config, reduced_serving)
    histories = {full.data.users.entities.index(u): h for u, h in by_user.items()}
    tokens = users.as_dict() if users is not None else {}

    report = EvaluationReport(
        protocol="fold-in", k=k, notes={"fold_users": fold_users, "seed": seed, **dropped}
    )
    context = None
    if fairness is not None:
        context = FairnessContext(fairness, full.data, k, users=users, items=items)
        report.fairness = context.report
    recommenders: list[Recommender] = [
        ServingRecommender("hybrid-trained", full.to_serving()),
        FoldInRecommender(reduced_serving, full.data, histories, tokens),
        FoldInRecommender(reduced_serving, full.data, histories, tokens, use_history=False),
    ]
    for recommender in recommenders:
        accumulator = score_users(
            recommender, full.data, truth, k, None, progress=progress, histories=histories
        )
        if context is not None:
            context.measure(recommender.name, accumulator)
        report.results.append(
            ModelResult(
                name=recommender.name,
                metrics=accumulator.result(),
                users=accumulator.users,
                fit_seconds=0.0,
            )
        )
    trained = report.result("hybrid-trained").metrics["precision"]
    folded = report.result("hybrid-fold-in").metrics["precision"]
    report.notes["precision_ratio_fold_in_vs_trained"] = (
        round(folded / trained, 4) if trained else (float("nan"))
    )
    return report


def _without(users: FeatureTable | None, dropped: set[str]) -> FeatureTable | None:
    if users is None:
        return None
    keep = [i for i, u in enumerate(users.ids) if u not in dropped]
    return FeatureTable(
        users.id_column,
        users.columns,
        [users.ids[i] for i in keep],
        [users.tokens[i] for i in keep],
    )


__all__ = ["FoldInRecommender", "evaluate_fold_in", "histories_for"]
