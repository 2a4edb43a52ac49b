"""Runs a split through the hybrid model and the baselines and collects the metrics."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from shelfrank.core.errors import InvalidInputError, InvariantError, UnknownIdError
from shelfrank.core.events import POSITIVE_EVENT_TYPES, EventType
from shelfrank.core.scoring import top_k
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation.baselines import (
    EaseRecommender,
    PopularityRecommender,
    Recommender,
    ServingRecommender,
    UserKnnRecommender,
    pure_cf_config,
)
from shelfrank.server.evaluation.ease_choice import choose_ease_l2
from shelfrank.server.evaluation.fairness import (
    FairnessContext,
    FairnessReport,
    FairnessSettings,
    check_settings,
)
from shelfrank.server.evaluation.metrics import (
    METRIC_NAMES,
    MetricAccumulator,
    auc_score,
    popularity_percentiles,
)
from shelfrank.server.evaluation.splits import EvaluationSplit
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.training_data import TrainingData

MODEL_NAMES = ("hybrid", "hybrid-lightfm", "lightfm-cf", "popularity", "user-knn", "ease")
BATCH_USERS = 256


@dataclass(frozen=True, kw_only=True)
class ModelResult:
    name: str
    metrics: dict[str, float]
    users: int
    fit_seconds: float


@dataclass(kw_only=True)
class EvaluationReport:
    protocol: str
    k: int
    results: list[ModelResult] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    # Per-group and item-side figures (server/evaluation/fairness.py), when asked for.
    fairness: FairnessReport | None = None

    def result(self, name: str) -> ModelResult:
        for result in self.results:
            if result.name == name:
                return result
        raise UnknownIdError(f"name: no result for model {name!r}")

    def to_json(self) -> dict[str, Any]:
        out = {
            "protocol": self.protocol,
            "k": self.k,
            "notes": self.notes,
            "models": {
                r.name: {
                    "users": r.users,
                    "fit_seconds": round(r.fit_seconds, 3),
                    **{m: round(v, 5) for m, v in r.metrics.items()},
                }
                for r in self.results
            },
        }
        if self.fairness is not None:
            out["fairness"] = self.fairness.to_json()
        return out

    def table(self) -> str:
        k = self.k
        headers = [
            "model",
            f"P@{k}",
            f"R@{k}",
            f"NDCG@{k}",
            f"MAP@{k}",
            "AUC",
            "coverage",
            "pop.bias",
            "users",
            "fit s",
        ]
        rows = [
            [
                r.name,
                *(f"{r.metrics[m]:.4f}" for m in METRIC_NAMES),
                str(r.users),
                f"{r.fit_seconds:.1f}",
            ]
            for r in self.results
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        notes = ", ".join(
            f"{key}={value}" for key, value in self.notes.items() if not isinstance(value, dict)
        )
        text = f"protocol: {self.protocol}  ({notes})\n" + "\n".join(lines)
        if self.fairness is not None and self.fairness.models:
            text += "\n\n" + self.fairness.table()
        return text


def parse_relevant(text: str) -> frozenset[EventType]:
    """``positive`` (every positive type) or a comma list such as ``purchase,add_to_cart``."""
    if text.strip() == "positive":
        return POSITIVE_EVENT_TYPES
    kinds = frozenset(EventType.parse(part) for part in text.split(",") if part.strip())
    if not kinds or EventType.DISMISS in kinds:
        raise InvalidInputError("relevant: name positive event types, e.g. 'purchase,add_to_cart'")
    return kinds


def relevance(
    test: Interactions, data: TrainingData, relevant: Collection[EventType]
) -> tuple[dict[int, npt.NDArray[np.int64]], dict[str, int]]:
    """Relevant item rows per user row; test rows the model cannot know are counted."""
    wanted = np.isin(test.event_types, [int(k) for k in relevant])
    per_user: dict[int, set[int]] = {}
    dropped = {
        "test_rows_unknown_user": 0,
        "test_rows_unknown_item": 0,
        "test_rows_seen_in_train": 0,
    }
    for index in np.flatnonzero(wanted).tolist():
        user = data.users.entities.get(test.user_ids[index])
        item = data.items.entities.get(test.item_ids[index])
        if user is None:
            dropped["test_rows_unknown_user"] += 1
        elif item is None:
            dropped["test_rows_unknown_item"] += 1
        else:
            per_user.setdefault(user, set()).add(item)
    out: dict[int, npt.NDArray[np.int64]] = {}
    for user, items in per_user.items():
        rows = np.array(sorted(items), dtype=np.int64)
        seen = data.seen.row(user)
        fresh = rows[~np.isin(rows, seen)]
        dropped["test_rows_seen_in_train"] += int(rows.size - fresh.size)
        if fresh.size:
            out[user] = fresh
    return out, dropped


def score_users(
    recommender: Recommender,
    data: TrainingData,
    truth: dict[int, npt.NDArray[np.int64]],
    k: int,
    candidates: npt.NDArray[np.int64] | None,
    *,
    progress: bool,
    histories: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] | None = None,
) -> MetricAccumulator:
    n_items = data.shape[1]
    pool = candidates if candidates is not None else np.arange(n_items)
    accumulator = MetricAccumulator(k, pool.size, popularity_percentiles(data.popularity))
    users = np.array(sorted(truth), dtype=np.int64)
    in_pool = np.zeros(n_items, dtype=bool)
    in_pool[pool] = True
    bar = tqdm(
        total=users.size,
        desc=f"scoring {recommender.name}",
        unit="user",
        disable=not progress,
        leave=False,
    )
    for start in range(0, users.size, BATCH_USERS):
        batch = users[start : start + BATCH_USERS]
        scores = recommender.score(batch)
        for position, user in enumerate(batch.tolist()):
            seen = data.seen.row(user)
            if histories is not None and user in histories:
                seen = np.union1d(seen, histories[user][0])
            top = top_k(scores[position], k, exclude=seen, candidates=candidates)
            allowed = in_pool.copy()
            allowed[seen] = False
            rows = np.flatnonzero(allowed)
            relevant_mask = np.isin(rows, truth[user])
            accumulator.add(
                top.indices,
                truth[user],
                auc_score(scores[position][rows], relevant_mask),
                user=data.users.entities.id_of(user),
            )
        bar.update(batch.size)
    bar.close()
    return accumulator


def evaluate_split(
    split: EvaluationSplit,
    config: TrainConfig,
    *,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    k: int = 10,
    models: Sequence[str] = MODEL_NAMES,
    relevant: Collection[EventType] = POSITIVE_EVENT_TYPES,
    progress: bool = False,
    fairness: FairnessSettings | None = None,
) -> EvaluationReport:
    """Train the hybrid model on the split, then score it and each of ``models`` on the
    split's test users; ``fairness`` adds per-group and item-side figures
    (:mod:`shelfrank.server.evaluation.fairness`)."""
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise InvalidInputError(
            f"models: unknown {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}"
        )
    if k <= 0:
        raise InvalidInputError(f"k: must be positive, got {k}")
    if fairness is not None:
        check_settings(fairness, users, items)
    hybrid = HybridModel.train(split.train, config, items=items, users=users, progress=progress)
    data = hybrid.data
    truth, dropped = relevance(split.test, data, relevant)
    if not truth:
        raise InvalidInputError("test: no user has a relevant test item the model can rank")
    candidates = None
    if split.candidate_item_ids is not None:
        candidates = np.array(data.items.entities.indices(split.candidate_item_ids), np.int64)
        truth = {u: rows[np.isin(rows, candidates)] for u, rows in truth.items()}
        truth = {u: rows for u, rows in truth.items() if rows.size}
    report = EvaluationReport(protocol=split.protocol, k=k, notes={**split.notes, **dropped})
    report.notes["train_events"] = len(split.train)
    report.notes["test_events"] = len(split.test)
    context = None
    if fairness is not None:
        context = FairnessContext(fairness, data, k, catalogue=candidates, users=users, items=items)
        report.fairness = context.report
    for name in models:
        tick = time.perf_counter()
        recommender: Recommender
        if name == "hybrid":
            recommender = ServingRecommender(name, hybrid.to_serving())
            fit_seconds = hybrid.summary.total_seconds if hybrid.summary else 0.0
        elif name == "hybrid-lightfm":
            plain = replace(hybrid.to_serving(), signals=None)
            recommender = ServingRecommender(name, plain)
            fit_seconds = hybrid.summary.total_seconds if hybrid.summary else 0.0
        elif name == "ease":
            l2 = choose_ease_l2(split.train, config, relevant)
            report.notes["ease_l2"] = l2
            recommender = EaseRecommender(data, l2)
            fit_seconds = time.perf_counter() - tick
        elif name == "lightfm-cf":
            cf = HybridModel.train(
                split.train, pure_cf_config(config), items=items, users=users, progress=progress
            )
            if list(cf.data.items.entities) != list(data.items.entities):
                raise InvariantError("pure-CF model indexed items differently")
            recommender = ServingRecommender(name, cf.to_serving())
            fit_seconds = time.perf_counter() - tick
        elif name == "popularity":
            recommender = PopularityRecommender(data)
            fit_seconds = time.perf_counter() - tick
        else:
            recommender = UserKnnRecommender(data)
            fit_seconds = time.perf_counter() - tick
        accumulator = score_users(recommender, data, truth, k, candidates, progress=progress)
        if context is not None:
            context.measure(name, accumulator)
        report.results.append(
            ModelResult(
                name=name,
                metrics=accumulator.result(),
                users=accumulator.users,
                fit_seconds=fit_seconds,
            )
        )
    return report
