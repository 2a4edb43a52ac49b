"""Ranking metrics over top-k lists with binary relevance."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from shelfrank.core.errors import InvalidInputError

METRIC_NAMES = ("precision", "recall", "ndcg", "map", "auc", "coverage", "popularity_bias")


@dataclass
class MetricAccumulator:
    """Accumulates per-user metrics; ``result()`` gives the means and catalogue metrics.

    ``popularity_percentile`` maps each item row to its training popularity percentile
    in [0, 1]; popularity bias is the mean percentile of recommended items (0.5 would be
    a popularity-neutral recommender, 1.0 recommends only the most popular items).

    Every top-k list added is kept (``top_lists``, in order), with its user's id when
    :meth:`add` is given one (``user_ids``): what the per-group and item-side metrics of
    :mod:`shelfrank.server.evaluation.fairness` are computed from.
    """

    k: int
    n_candidate_items: int
    popularity_percentile: npt.NDArray[np.float64]
    per_user: dict[str, list[float]] = field(
        default_factory=lambda: {m: [] for m in ("precision", "recall", "ndcg", "map", "auc")}
    )
    recommended: set[int] = field(default_factory=set)
    popularity: list[float] = field(default_factory=list)
    top_lists: list[npt.NDArray[np.int64]] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)

    def add(
        self,
        top: npt.NDArray[np.int64],
        relevant: npt.NDArray[np.int64],
        auc: float,
        user: str | None = None,
    ) -> None:
        if relevant.size == 0:
            raise InvalidInputError("relevant: a user without relevant items cannot be evaluated")
        self.top_lists.append(np.array(top, dtype=np.int64))
        if user is not None:
            self.user_ids.append(user)
        hits = np.isin(top, relevant).astype(np.float64)
        k = self.k
        n_rel = relevant.size
        self.per_user["precision"].append(hits.sum() / k)
        self.per_user["recall"].append(hits.sum() / n_rel)
        discounts = 1.0 / np.log2(np.arange(2, top.size + 2))
        ideal = discounts[: min(n_rel, k)].sum() if top.size else 1.0
        if top.size < min(n_rel, k):
            ideal = (1.0 / np.log2(np.arange(2, min(n_rel, k) + 2))).sum()
        self.per_user["ndcg"].append(float((hits * discounts).sum() / ideal))
        precision_at = np.cumsum(hits) / np.arange(1, top.size + 1) if top.size else hits
        self.per_user["map"].append(float((precision_at * hits).sum() / min(n_rel, k)))
        self.per_user["auc"].append(auc)
        self.recommended.update(top.tolist())
        if top.size:
            self.popularity.append(float(self.popularity_percentile[top].mean()))

    @property
    def users(self) -> int:
        return len(self.per_user["precision"])

    def result(self) -> dict[str, float]:
        out = {
            name: float(np.mean(values)) if values else float("nan")
            for name, values in self.per_user.items()
        }
        out["coverage"] = len(self.recommended) / max(1, self.n_candidate_items)
        out["popularity_bias"] = (
            float(np.mean(self.popularity)) if self.popularity else float("nan")
        )
        return out


def auc_score(scores: npt.NDArray[np.floating], relevant_mask: npt.NDArray[np.bool_]) -> float:
    """Probability that a relevant candidate outscores a non-relevant one (ties count 1/2)."""
    n_pos = int(relevant_mask.sum())
    n_neg = int(relevant_mask.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks for ties
    positive_rank_sum = ranks[relevant_mask].sum()
    return float((positive_rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def popularity_percentiles(popularity: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Percentile (0 = least, 1 = most popular) of each item's popularity."""
    if popularity.size <= 1:
        return np.ones(popularity.size)
    order = np.argsort(popularity, kind="mergesort")
    out = np.empty(popularity.size, dtype=np.float64)
    out[order] = np.arange(popularity.size) / (popularity.size - 1)
    return out
