"""The temporal protocol as a shop lives it: train on the past, predict the next period.

Everything before the cut-off trains; the period after it is the test. Three settings:

- ``repeat``: shoppers known before the cut-off, every item they buy in the test period
  counts (buying again allowed, nothing excluded; the blend's ``repeat`` mode);
- ``new``: the same shoppers, only items new to them count, and items they touched before
  are excluded (``new`` mode);
- ``cold-users``: shoppers first seen in the test period, served from their profile
  (``--users`` features) alone.

Relevant: the test period's purchases (``--relevant``). Baselines in the same run:
last-N-days popularity, "what you bought most" (the shopper's own purchase counts, then
recent popularity), EASE (lambda chosen from 100/200/400 on the last tenth of the
training period; only where the catalogue fits, ``EASE_MAX_ITEMS``), pure-CF LightFM,
user-kNN, and the hybrid LightFM without the blend (what shelfrank served before).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from tqdm import tqdm

from shelfrank.core.blend import Mode
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType
from shelfrank.core.scoring import top_k
from shelfrank.core.serving import ServingModel
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation.baselines import UserKnnRecommender, pure_cf_config
from shelfrank.server.evaluation.ease_choice import choose_ease_l2, relevant_rows
from shelfrank.server.evaluation.fairness import (
    FairnessContext,
    FairnessSettings,
    check_settings,
)
from shelfrank.server.evaluation.metrics import MetricAccumulator, popularity_percentiles
from shelfrank.server.evaluation.runner import EvaluationReport, ModelResult
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.item_item import EASE_MAX_ITEMS, ease_weights
from shelfrank.server.training_data import DAY_SECONDS, TrainingData

SETTINGS = ("repeat", "new", "cold-users")
SHOP_MODELS = (
    "shelfrank",
    "hybrid-lightfm",
    "lightfm-cf",
    "popularity-recent",
    "bought-most",
    "ease",
    "user-knn",
)

IntArray = npt.NDArray[np.int64]
# (user id, user row or None, mode) -> top item rows
Ranker = Callable[[str, int | None, str, IntArray, int], IntArray]


def time_split(
    interactions: Interactions, *, test_days: float | None, test_fraction: float
) -> tuple[Interactions, Interactions, float]:
    stamps = interactions.timestamps
    if len(interactions) == 0 or not np.isfinite(stamps).all():
        raise InvalidInputError("timestamp: the temporal protocol needs a timestamp on every event")
    if test_days is not None:
        cutoff = float(stamps.max()) - test_days * DAY_SECONDS
    else:
        cutoff = float(np.quantile(stamps, 1 - test_fraction))
    later = stamps > cutoff
    if not later.any() or later.all():
        raise InvalidInputError("test: the cut-off leaves no training or no test event")
    return interactions.take(~later), interactions.take(later), cutoff


def recent_popularity(train: Interactions, data: TrainingData, days: float) -> IntArray:
    """Item rows by positive events in the last ``days`` of training, best first."""
    cutoff = float(train.timestamps.max()) - days * DAY_SECONDS
    keep = (train.timestamps > cutoff) & (train.event_types != int(EventType.DISMISS))
    counts = np.zeros(len(data.items.entities), np.float64)
    for index in np.flatnonzero(keep).tolist():
        counts[data.items.entities.index(train.item_ids[index])] += 1.0
    counts += data.popularity / (data.popularity.max() + 1.0) * 0.5  # all-time breaks ties
    return np.lexsort((np.arange(counts.size), -counts)).astype(np.int64)


def _first(order: IntArray, k: int, exclude: IntArray) -> IntArray:
    if exclude.size:
        order = order[~np.isin(order, exclude)]
    return order[:k]


def purchase_counts(train: Interactions, data: TrainingData) -> sp.csr_matrix:
    bought = train.event_types == int(EventType.PURCHASE)
    if not bought.any():
        bought = train.event_types != int(EventType.DISMISS)
    chosen = np.flatnonzero(bought).tolist()
    users = [data.users.entities.index(train.user_ids[i]) for i in chosen]
    items = [data.items.entities.index(train.item_ids[i]) for i in chosen]
    last = train.timestamps[bought]
    shape = data.shape
    counts = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=shape)
    recency = sp.csr_matrix((last / last.max() if last.size else last, (users, items)), shape=shape)
    counts.sum_duplicates()
    recency.sum_duplicates()
    # Ties in count go to the more recently bought item: a tiny recency term.
    return sp.csr_matrix(counts + recency.multiply(1e-6 / max(1.0, recency.max())))


def evaluate_shop(
    interactions: Interactions,
    config: TrainConfig,
    *,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    test_days: float | None = None,
    test_fraction: float = 0.2,
    recent_days: float = 30.0,
    k: int = 10,
    models: Sequence[str] = SHOP_MODELS,
    relevant: Collection[EventType] = (EventType.PURCHASE,),
    progress: bool = False,
    fairness: FairnessSettings | None = None,
) -> EvaluationReport:
    unknown = [m for m in models if m not in SHOP_MODELS]
    if unknown:
        raise InvalidInputError(f"models: unknown {', '.join(unknown)}; choose from {SHOP_MODELS}")
    if fairness is not None:
        check_settings(fairness, users, items)
    train, test, cutoff = time_split(interactions, test_days=test_days, test_fraction=test_fraction)
    tick = time.perf_counter()
    hybrid = HybridModel.train(train, config, items=items, users=users, progress=progress)
    hybrid_seconds = time.perf_counter() - tick
    data = hybrid.data
    serving = hybrid.to_serving()
    truth = relevant_rows(test, data, relevant)
    tokens = users.as_dict() if users is not None else {}
    report = EvaluationReport(
        protocol="temporal",
        k=k,
        notes={
            "cutoff_unix_seconds": cutoff,
            "train_events": len(train),
            "test_events": len(test),
            "recent_days": recent_days,
            "blend_half_life_days": hybrid.config.half_life_days or "none",
        },
    )
    report.notes["blend_fit"] = hybrid.blend_report
    percentiles = popularity_percentiles(data.popularity)
    popular = recent_popularity(train, data, recent_days)
    rankers: dict[str, tuple[Ranker, float]] = {}
    for name in models:
        tick = time.perf_counter()
        if name == "shelfrank":
            rankers[name] = (_serving_ranker(serving, tokens), hybrid_seconds)
            continue
        if name == "hybrid-lightfm":
            plain = replace(serving, signals=None, item_popularity=data.popularity)
            rankers[name] = (_serving_ranker(plain, tokens), hybrid_seconds)
            continue
        if name == "lightfm-cf":
            cf = HybridModel.train(
                train, replace(pure_cf_config(config), blend=False), items=items, users=users
            )
            ranker = _serving_ranker(cf.to_serving(), {})
        elif name == "popularity-recent":
            ranker = _order_ranker(popular)
        elif name == "bought-most":
            ranker = _bought_most_ranker(purchase_counts(train, data), popular)
        elif name == "ease":
            if len(data.items.entities) > EASE_MAX_ITEMS:
                report.notes["ease"] = f"skipped: more than {EASE_MAX_ITEMS} items"
                continue
            l2 = choose_ease_l2(train, config, relevant)
            report.notes["ease_l2"] = l2
            ranker = _matrix_ranker(
                sp.csr_matrix(data.weights), ease_weights(data.weights, l2), popular
            )
        else:
            ranker = _knn_ranker(UserKnnRecommender(data), popular)
        rankers[name] = (ranker, time.perf_counter() - tick)

    def trained(user_id: str) -> bool:
        row = data.users.entities.get(user_id)
        return row is not None and data.seen.row(row).size > 0

    known = {u: r for u, r in truth.items() if trained(u)}
    cold = {u: r for u, r in truth.items() if not trained(u)}
    n_items = len(data.items.entities)
    context = None
    if fairness is not None:
        context = FairnessContext(fairness, data, k, users=users, items=items)
        report.fairness = context.report
    for setting in SETTINGS:
        for name, (ranker, seconds) in rankers.items():
            accumulator = MetricAccumulator(k, n_items, percentiles)
            group = cold if setting == "cold-users" else known
            bar = tqdm(
                total=len(group),
                desc=f"{setting}: {name}",
                unit="user",
                disable=not progress,
                leave=False,
            )
            for user_id, rows in sorted(group.items()):
                bar.update(1)
                row = data.users.entities.get(user_id) if setting != "cold-users" else None
                exclude = np.empty(0, np.int64)
                target = rows
                if setting == "new" and row is not None:
                    exclude = data.seen.row(row)
                    target = rows[~np.isin(rows, exclude)]
                if target.size == 0:
                    continue
                mode = "repeat" if setting == "repeat" else "new"
                top = ranker(user_id, row, mode, exclude, k)
                accumulator.add(top, target, float("nan"), user=user_id)
            bar.close()
            if accumulator.users:
                result = accumulator.result()
                if context is not None:
                    context.measure(f"{setting}/{name}", accumulator)
                report.results.append(
                    ModelResult(
                        name=f"{setting}/{name}",
                        metrics=result,
                        users=accumulator.users,
                        fit_seconds=seconds,
                    )
                )
    return report


def _mode(text: str) -> Mode:
    return "repeat" if text == "repeat" else "new"


def _serving_ranker(model: ServingModel, tokens: dict[str, tuple[str, ...]]) -> Ranker:
    def rank(user_id: str, row: int | None, mode: str, exclude: IntArray, k: int) -> IntArray:
        user = model.user_vector(user_id, tokens=tokens.get(user_id, ()))
        top = model.rank(
            user,
            k,
            exclude=exclude if exclude.size else None,
            mode=_mode(mode),
        )
        return top.indices

    return rank


def _order_ranker(order: IntArray) -> Ranker:
    def rank(user_id: str, row: int | None, mode: str, exclude: IntArray, k: int) -> IntArray:
        return _first(order, k, exclude)

    return rank


def _bought_most_ranker(counts: sp.csr_matrix, popular: IntArray) -> Ranker:
    def rank(user_id: str, row: int | None, mode: str, exclude: IntArray, k: int) -> IntArray:
        own = np.empty(0, np.int64)
        if row is not None:
            start, end = counts.indptr[row], counts.indptr[row + 1]
            cols, values = counts.indices[start:end], counts.data[start:end]
            own = cols[np.lexsort((cols, -values))].astype(np.int64)
            if exclude.size:
                own = own[~np.isin(own, exclude)]
        rest = _first(popular, k, np.union1d(exclude, own))
        return np.concatenate([own, rest])[:k]

    return rank


def _matrix_ranker(x: sp.csr_matrix, weights: npt.NDArray[np.float64], popular: IntArray) -> Ranker:
    def rank(user_id: str, row: int | None, mode: str, exclude: IntArray, k: int) -> IntArray:
        if row is None or x.indptr[row] == x.indptr[row + 1]:
            return _first(popular, k, exclude)
        scores = np.asarray(x[row] @ weights).ravel()
        return top_k(scores, k, exclude=exclude if exclude.size else None).indices

    return rank


def _knn_ranker(knn: UserKnnRecommender, popular: IntArray) -> Ranker:
    def rank(user_id: str, row: int | None, mode: str, exclude: IntArray, k: int) -> IntArray:
        if row is None:
            return _first(popular, k, exclude)
        scores = knn.score(np.array([row], np.int64))[0]
        return top_k(scores, k, exclude=exclude if exclude.size else None).indices

    return rank
