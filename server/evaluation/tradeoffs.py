"""The ``tradeoffs`` protocol: what steering a list towards diversity or exploration costs
in accuracy (``shelfrank evaluate --protocol tradeoffs``).

Every list is ranked by :func:`shelfrank.server.offline.recommend_users`, the server's one
ranking pipeline (core/ranking.py), with seen items excluded and the ``new`` blend; only the
request's :class:`~shelfrank.core.ranking.Steering` changes along a curve.

Diversity curve. The hybrid model is trained on the train file; for each diversity ``d``
every test user with a relevant test item (the runner's
:func:`~shelfrank.server.evaluation.runner.relevance`: relevant test items the model knows
and the user had not seen in training) is ranked with ``Steering(diversity=d)``. Per ``d``:

- P@k and NDCG@k as the runner defines them
  (:class:`~shelfrank.server.evaluation.metrics.MetricAccumulator`: hits / k);
- intra-list diversity by item vectors: per list, the mean over its unordered item pairs of
  the cosine distance ``1 - cos`` of the model's float item vectors (a zero vector is at
  cosine 0 from everything); the mean over lists of two items or more;
- intra-list diversity by item features: the fairness report's Jaccard distance of the
  items' tokens (:func:`~shelfrank.server.evaluation.fairness.intra_list_diversity`) on the
  item columns asked for (default: every column of the items file);
- each figure's change against ``d = 0`` in percent (None when the baseline is 0).

The best setting is the ``d`` with the largest vector ILD whose P@k is at most
:data:`MAX_PRECISION_LOSS` (5%) below the ``d = 0`` P@k (ties: the smaller ``d``).

Exploration curve. As the cold-items protocol does, a seeded ``item_fraction`` of the
items of the train file loses all its train interactions
(:func:`~shelfrank.server.evaluation.splits.cold_items_split`); a second hybrid model is
trained on the rest. The held-out items stay in the catalogue through the items file,
without any interaction, so they are new items, the ones exploration promotes
(:func:`~shelfrank.core.ranking.exploration_rows`). The warm test is the test file less
the held-out items' events. For each exploration share ``e`` every warm-test user is ranked
with ``Steering(exploration=e)`` and recommendation id ``"tradeoffs:" + user id``. Per ``e``:

- P@k and NDCG@k on the warm test and the P@k change against ``e = 0`` in percent;
- cold slot share: the share of all recommended slots (a list of k items is k slots)
  filled by held-out items;
- cold coverage: the share of held-out items recommended at least once.

Items without any training interaction that were not held out (ids only in the items
file) are new too and may take exploration slots; they do not count as cold here.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from tqdm import tqdm

from shelfrank.core.errors import InvalidInputError, InvariantError
from shelfrank.core.events import POSITIVE_EVENT_TYPES, EventType
from shelfrank.core.ranking import Steering, check_share
from shelfrank.core.serving import ServingModel
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.evaluation.fairness import (
    FairnessSettings,
    check_settings,
    format_table,
    intra_list_diversity,
    token_matrix,
)
from shelfrank.server.evaluation.metrics import MetricAccumulator, popularity_percentiles
from shelfrank.server.evaluation.runner import EvaluationReport, relevance
from shelfrank.server.evaluation.splits import cold_items_split
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.offline import OfflineRequest, recommend_users

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

DEFAULT_DIVERSITY_SWEEP = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
DEFAULT_EXPLORATION_SWEEP = (0.0, 0.05, 0.1, 0.2, 0.3)
# The best diversity setting may cost at most this share of the d = 0 P@k.
MAX_PRECISION_LOSS = 0.05
RECOMMENDATION_ID_PREFIX = "tradeoffs:"
DIGITS = 5


# ---------------------------------------------------------------- small pieces


def sweep(values: Iterable[float], option: str) -> tuple[float, ...]:
    """Shares in [0, 1], sorted, without repeats, always with 0 (the baseline)."""
    checked = {check_share(value, option) for value in values}
    return tuple(sorted(checked | {0.0}))


def percent_change(value: float | None, baseline: float | None) -> float | None:
    """``100 * (value - baseline) / baseline``; None without both or when the baseline is 0."""
    if value is None or baseline is None or baseline == 0:
        return None
    return 100.0 * (value - baseline) / baseline


def cosine_ild(lists: Sequence[IntArray], vectors: FloatArray) -> float | None:
    """Mean over lists (of two items or more) of the mean pairwise cosine distance
    ``1 - cos`` of the items' ``vectors`` rows; None without such a list."""
    per_list: list[float] = []
    for top in lists:
        if len(top) < 2:
            continue
        rows = np.asarray(vectors[np.asarray(top, dtype=np.int64)], dtype=np.float64)
        norms = np.linalg.norm(rows, axis=1)
        norms[norms == 0] = 1.0  # a zero vector: cosine 0 from everything
        unit = rows / norms[:, None]
        upper = np.triu_indices(len(top), 1)
        cosines = (unit @ unit.T)[upper]
        per_list.append(float((1.0 - cosines).mean()))
    return float(np.mean(per_list)) if per_list else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


# ---------------------------------------------------------------- ranking and scoring


def rank_users(
    model: ServingModel,
    user_ids: Sequence[str],
    k: int,
    steering: Steering,
    *,
    progress: bool = False,
    desc: str = "ranking",
) -> list[IntArray]:
    """Each user's top-k item rows (in ``model``'s item index) through the server's
    pipeline: seen items excluded, the ``new`` blend, ``steering``, recommendation id
    ``"tradeoffs:" + user id``."""
    request = OfflineRequest(steering=steering, recommendation_id_prefix=RECOMMENDATION_ID_PREFIX)
    lists: list[IntArray] = []
    with tqdm(
        total=len(user_ids), desc=desc, unit="user", disable=not progress, leave=False
    ) as bar:
        for recommendation in recommend_users(
            model, user_ids, k, exclude_seen=True, mode="new", request=request
        ):
            lists.append(model.item_rows([item for item, _ in recommendation.items]))
            bar.update(1)
    return lists


def _accuracy(
    lists: Sequence[IntArray],
    user_ids: Sequence[str],
    truth: Mapping[str, IntArray],
    k: int,
    percentiles: npt.NDArray[np.float64],
) -> dict[str, float]:
    """P@k and NDCG@k exactly as the runner accumulates them."""
    accumulator = MetricAccumulator(k, percentiles.size, percentiles)
    for user, top in zip(user_ids, lists, strict=True):
        accumulator.add(top, truth[user], float("nan"), user=user)
    result = accumulator.result()
    return {"precision": result["precision"], "ndcg": result["ndcg"]}


# ---------------------------------------------------------------- the diversity curve


@dataclass(frozen=True, kw_only=True)
class DiversityPoint:
    diversity: float
    precision: float
    ndcg: float
    ild_cosine: float | None
    ild_jaccard: float | None
    precision_change: float | None  # percent against d = 0
    ild_cosine_change: float | None
    ild_jaccard_change: float | None
    # Each evaluated user's list (item rows of the model), parallel to the curve's users;
    # kept for inspection, not written to JSON.
    lists: tuple[IntArray, ...] = field(default=(), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "diversity": self.diversity,
            "precision": _round(self.precision),
            "ndcg": _round(self.ndcg),
            "ild_cosine": _round(self.ild_cosine),
            "ild_jaccard": _round(self.ild_jaccard),
            "precision_change_percent": _round(self.precision_change),
            "ild_cosine_change_percent": _round(self.ild_cosine_change),
            "ild_jaccard_change_percent": _round(self.ild_jaccard_change),
        }


@dataclass(frozen=True, kw_only=True)
class DiversityCurve:
    k: int
    user_ids: tuple[str, ...]
    diversity_by: tuple[str, ...] | None  # None: no items file, no Jaccard ILD
    points: tuple[DiversityPoint, ...]  # by diversity, the first at d = 0
    max_precision_loss: float = MAX_PRECISION_LOSS

    @property
    def baseline(self) -> DiversityPoint:
        return self.points[0]

    @property
    def best(self) -> DiversityPoint:
        """The largest vector ILD among settings losing at most ``max_precision_loss`` of
        the baseline P@k (ties: the smaller diversity)."""
        floor = self.baseline.precision * (1.0 - self.max_precision_loss)
        allowed = [p for p in self.points if p.precision >= floor - 1e-12]
        return max(
            allowed,
            key=lambda p: (-math.inf if p.ild_cosine is None else p.ild_cosine, -p.diversity),
        )

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "k": self.k,
            "users": len(self.user_ids),
            "diversity_by": None if self.diversity_by is None else list(self.diversity_by),
            "max_precision_loss": self.max_precision_loss,
            "points": [p.to_json() for p in self.points],
            "best": best.to_json(),
        }

    def table(self) -> str:
        k = self.k
        jaccard = "ILD Jaccard" + (
            f" ({', '.join(self.diversity_by)})" if self.diversity_by else ""
        )
        rows = [
            [
                f"{p.diversity:g}",
                _fmt(p.precision),
                _pct(p.precision_change),
                _fmt(p.ndcg),
                _fmt(p.ild_cosine),
                _pct(p.ild_cosine_change),
                _fmt(p.ild_jaccard),
                _pct(p.ild_jaccard_change),
            ]
            for p in self.points
        ]
        headers = [
            "diversity",
            f"P@{k}",
            "change",
            f"NDCG@{k}",
            "ILD cosine",
            "change",
            jaccard,
            "change",
        ]
        best = self.best
        return (
            f"diversity curve ({len(self.user_ids)} test users, top-{k})\n"
            + format_table(headers, rows)
            + f"\nbest: diversity {best.diversity:g} (largest ILD cosine with P@{k} at most "
            f"{100 * self.max_precision_loss:g}% below diversity 0): ILD cosine "
            f"{_pct(best.ild_cosine_change)}, ILD Jaccard {_pct(best.ild_jaccard_change)}, "
            f"P@{k} {_pct(best.precision_change)}"
        )


def diversity_curve(
    model: ServingModel,
    truth: Mapping[str, IntArray],
    k: int,
    diversities: Iterable[float] = DEFAULT_DIVERSITY_SWEEP,
    *,
    tokens: sp.csr_matrix | None = None,
    diversity_by: tuple[str, ...] | None = None,
    progress: bool = False,
) -> DiversityCurve:
    """Rank every user of ``truth`` (user id -> relevant item rows of ``model``) at each
    diversity; ``tokens``: the binary item x token rows the Jaccard ILD compares."""
    if not truth:
        raise InvalidInputError("truth: no user to evaluate")
    users = sorted(truth)
    vectors = model.items.item_vectors
    percentiles = popularity_percentiles(model.item_popularity)
    points: list[DiversityPoint] = []
    for d in sweep(diversities, "diversity"):
        lists = rank_users(
            model, users, k, Steering(diversity=d), progress=progress, desc=f"diversity {d:g}"
        )
        accuracy = _accuracy(lists, users, truth, k, percentiles)
        ild_cosine = cosine_ild(lists, vectors)
        ild_jaccard = None if tokens is None else intra_list_diversity(lists, tokens)
        base = points[0] if points else None
        points.append(
            DiversityPoint(
                diversity=d,
                precision=accuracy["precision"],
                ndcg=accuracy["ndcg"],
                ild_cosine=ild_cosine,
                ild_jaccard=ild_jaccard,
                precision_change=percent_change(
                    accuracy["precision"], accuracy["precision"] if base is None else base.precision
                ),
                ild_cosine_change=percent_change(
                    ild_cosine, ild_cosine if base is None else base.ild_cosine
                ),
                ild_jaccard_change=percent_change(
                    ild_jaccard, ild_jaccard if base is None else base.ild_jaccard
                ),
                lists=tuple(lists),
            )
        )
    return DiversityCurve(
        k=k, user_ids=tuple(users), diversity_by=diversity_by, points=tuple(points)
    )


# ---------------------------------------------------------------- the exploration curve


@dataclass(frozen=True, kw_only=True)
class ExplorationPoint:
    exploration: float
    precision: float
    ndcg: float
    precision_change: float | None  # percent against e = 0
    cold_slot_share: float  # share of recommended slots filled by held-out items
    cold_coverage: float  # share of held-out items recommended at least once
    lists: tuple[IntArray, ...] = field(default=(), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "exploration": self.exploration,
            "precision": _round(self.precision),
            "ndcg": _round(self.ndcg),
            "precision_change_percent": _round(self.precision_change),
            "cold_slot_share": _round(self.cold_slot_share),
            "cold_coverage": _round(self.cold_coverage),
        }


@dataclass(frozen=True, kw_only=True)
class ExplorationCurve:
    k: int
    user_ids: tuple[str, ...]
    held_out_items: int
    points: tuple[ExplorationPoint, ...]  # by exploration, the first at e = 0

    @property
    def baseline(self) -> ExplorationPoint:
        return self.points[0]

    def point(self, exploration: float) -> ExplorationPoint:
        for p in self.points:
            if p.exploration == exploration:
                return p
        raise InvalidInputError(f"exploration: {exploration} is not on the curve")

    def to_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "users": len(self.user_ids),
            "held_out_items": self.held_out_items,
            "points": [p.to_json() for p in self.points],
        }

    def table(self) -> str:
        k = self.k
        rows = [
            [
                f"{p.exploration:g}",
                _fmt(p.precision),
                _pct(p.precision_change),
                _fmt(p.ndcg),
                _fmt(p.cold_slot_share),
                _fmt(p.cold_coverage),
            ]
            for p in self.points
        ]
        headers = [
            "exploration",
            f"P@{k} (warm)",
            "change",
            f"NDCG@{k}",
            "cold slot share",
            "cold items shown",
        ]
        return (
            f"exploration curve ({len(self.user_ids)} warm-test users, top-{k}, "
            f"{self.held_out_items} held-out items)\n" + format_table(headers, rows)
        )


def exploration_curve(
    model: ServingModel,
    truth: Mapping[str, IntArray],
    k: int,
    held_out: IntArray,
    explorations: Iterable[float] = DEFAULT_EXPLORATION_SWEEP,
    *,
    progress: bool = False,
) -> ExplorationCurve:
    """Rank every user of ``truth`` at each exploration share; ``held_out``: the item rows
    of ``model`` whose share of the slots is measured."""
    if not truth:
        raise InvalidInputError("truth: no user to evaluate")
    held = np.unique(np.asarray(held_out, dtype=np.int64))
    if held.size == 0:
        raise InvalidInputError("held_out: no held-out item")
    users = sorted(truth)
    percentiles = popularity_percentiles(model.item_popularity)
    points: list[ExplorationPoint] = []
    for e in sweep(explorations, "exploration"):
        lists = rank_users(
            model, users, k, Steering(exploration=e), progress=progress, desc=f"exploration {e:g}"
        )
        accuracy = _accuracy(lists, users, truth, k, percentiles)
        flat = np.concatenate(lists) if lists else np.empty(0, np.int64)
        cold = np.isin(flat, held)
        base = points[0] if points else None
        points.append(
            ExplorationPoint(
                exploration=e,
                precision=accuracy["precision"],
                ndcg=accuracy["ndcg"],
                precision_change=percent_change(
                    accuracy["precision"], accuracy["precision"] if base is None else base.precision
                ),
                cold_slot_share=float(cold.mean()) if flat.size else 0.0,
                cold_coverage=float(np.unique(flat[cold]).size / held.size),
                lists=tuple(lists),
            )
        )
    return ExplorationCurve(
        k=k, user_ids=tuple(users), held_out_items=int(held.size), points=tuple(points)
    )


# ---------------------------------------------------------------- the protocol


@dataclass(kw_only=True)
class TradeoffReport(EvaluationReport):
    """The two curves; ``results`` stays empty (no model is compared with another)."""

    diversity: DiversityCurve
    exploration: ExplorationCurve

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "k": self.k,
            "notes": self.notes,
            "diversity": self.diversity.to_json(),
            "exploration": self.exploration.to_json(),
        }

    def table(self) -> str:
        notes = ", ".join(
            f"{key}={value}" for key, value in self.notes.items() if not isinstance(value, dict)
        )
        return (
            f"protocol: {self.protocol}  ({notes})\n\n"
            + self.diversity.table()
            + "\n\n"
            + self.exploration.table()
        )


def _truth_by_id(
    test: Interactions, model: HybridModel, serving: ServingModel, relevant: Collection[EventType]
) -> tuple[dict[str, IntArray], dict[str, int]]:
    """Relevant item rows per user id, as the runner finds them (rows of ``serving``)."""
    data = model.data
    if list(serving.item_ids) != list(data.items.entities):
        raise InvariantError("the serving model indexes items differently from its data")
    truth, dropped = relevance(test, data, relevant)
    return {data.users.entities.id_of(user): rows for user, rows in truth.items()}, dropped


def item_tokens(
    serving: ServingModel, items: FeatureTable, columns: tuple[str, ...]
) -> sp.csr_matrix:
    """Binary item x token rows (of ``serving``'s items) of the given item columns."""
    table = items.as_dict()
    prefixes = tuple(c + "=" for c in columns)
    return token_matrix(
        [[t for t in table.get(item, ()) if t.startswith(prefixes)] for item in serving.item_ids]
    )


def evaluate_tradeoffs(
    train: Interactions,
    test: Interactions,
    config: TrainConfig,
    *,
    items: FeatureTable | None,
    users: FeatureTable | None = None,
    k: int = 10,
    relevant: Collection[EventType] = POSITIVE_EVENT_TYPES,
    diversities: Iterable[float] = DEFAULT_DIVERSITY_SWEEP,
    explorations: Iterable[float] = DEFAULT_EXPLORATION_SWEEP,
    diversity_by: tuple[str, ...] | None = None,
    item_fraction: float = 0.2,
    split_seed: int = 0,
    progress: bool = False,
) -> TradeoffReport:
    """The diversity curve of a model trained on ``train`` and the exploration curve of
    one trained without a held-out share of the items (see the module docstring)."""
    if k <= 0:
        raise InvalidInputError(f"k: must be positive, got {k}")
    if items is None:
        raise InvalidInputError(
            "items: the tradeoffs protocol needs the items file (held-out items stay in the "
            "catalogue through their features)"
        )
    check_settings(FairnessSettings(diversity_by=diversity_by), users, items)
    columns = items.columns if diversity_by is None else diversity_by
    diversities = sweep(diversities, "diversity")
    explorations = sweep(explorations, "exploration")
    # Split first: bad settings fail before any training.
    split = cold_items_split(train, item_fraction, split_seed)
    held_ids = split.candidate_item_ids or ()
    if not held_ids:
        raise InvalidInputError("item_fraction: no item was held out; raise it")
    held_set = set(held_ids)
    warm_test = test.take(
        np.fromiter((item not in held_set for item in test.item_ids), bool, len(test))
    )

    report_notes: dict[str, Any] = {"train_events": len(train), "test_events": len(test)}
    hybrid = HybridModel.train(train, config, items=items, users=users, progress=progress)
    serving = hybrid.to_serving()
    truth, dropped = _truth_by_id(test, hybrid, serving, relevant)
    if not truth:
        raise InvalidInputError("test: no user has a relevant test item the model can rank")
    report_notes.update(dropped)
    diversity = diversity_curve(
        serving,
        truth,
        k,
        diversities,
        tokens=item_tokens(serving, items, columns),
        diversity_by=columns,
        progress=progress,
    )
    del hybrid, serving

    cold = HybridModel.train(split.train, config, items=items, users=users, progress=progress)
    cold_serving = cold.to_serving()
    warm_truth, warm_dropped = _truth_by_id(warm_test, cold, cold_serving, relevant)
    if not warm_truth:
        raise InvalidInputError("test: no user has a relevant warm test item")
    # held-out items missing from the items file left the catalogue with their events
    kept = [item for item in held_ids if item in cold_serving.item_ids]
    if not kept:
        raise InvalidInputError("items: no held-out item is in the items file")
    held_rows = cold_serving.item_rows(kept)
    report_notes.update(
        {
            "item_fraction": item_fraction,
            "split_seed": split_seed,
            "held_out_items": len(held_ids),
            "held_out_items_without_features": len(held_ids) - len(kept),
            "held_out_train_events": len(split.test),
            "warm_test_events": len(warm_test),
            "new_items": int(np.count_nonzero(cold_serving.item_popularity <= 0)),
        }
    )
    report_notes["warm"] = warm_dropped
    exploration = exploration_curve(
        cold_serving, warm_truth, k, held_rows, explorations, progress=progress
    )
    return TradeoffReport(
        protocol="tradeoffs",
        k=k,
        notes=report_notes,
        diversity=diversity,
        exploration=exploration,
    )


__all__ = [
    "DEFAULT_DIVERSITY_SWEEP",
    "DEFAULT_EXPLORATION_SWEEP",
    "MAX_PRECISION_LOSS",
    "DiversityCurve",
    "DiversityPoint",
    "ExplorationCurve",
    "ExplorationPoint",
    "TradeoffReport",
    "cosine_ild",
    "diversity_curve",
    "evaluate_tradeoffs",
    "exploration_curve",
    "item_tokens",
    "percent_change",
    "rank_users",
    "sweep",
]
