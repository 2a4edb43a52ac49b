"""Fitting the blend on a validation split carved from the end of the training period.

The newest ``validation_fraction`` of the events (by time) is held out; LightFM and every
signal are trained on the rest (the prefix), and for each candidate half-life the blend
weights of each (segment, mode) are chosen by coordinate ascent on NDCG@10 of the held-out
purchases (of every positive event when the held-out period has no purchase):

- ``trained``: shoppers known in the prefix; ``repeat`` ranks every held-out purchase,
  ``new`` only items they had not touched before (seen items excluded);
- ``fold-in``: shoppers new in the held-out period with at least two events: the first
  half of their events is the history folded in, the second half is to be predicted;
- ``features``: shoppers new in the held-out period, from their profile alone.

A (segment, mode) with fewer than ``bag_below`` validation shoppers is fitted on
``blend_bags`` bootstrap resamples of them and given the mean weights (bagging).

The half-life with the best mean over the settings wins: first the one of trend and
repeat (item-to-item votes undecayed), then, with it, the one of the item-to-item votes.
Scoring runs over candidates (the best ``CANDIDATES`` items by the model's score and by
trend, plus the best by item-to-item votes and every item to buy again), which hold the
top 10 of any blend of these components in practice.
The test period is never seen: this runs inside ``shelfrank train`` on training data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from shelfrank.core.blend import (
    COMPONENTS,
    BlendTable,
    BlendWeights,
    ItemNeighbours,
    Mode,
    RankingSignals,
    UserHistory,
)
from shelfrank.core.errors import InvariantError
from shelfrank.core.events import EventType
from shelfrank.core.pruned_scan import in_sorted
from shelfrank.core.serving import ServingModel
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.compiled_fit import VoteSummer, blended_ndcg
from shelfrank.server.config import TrainConfig
from shelfrank.server.item_item import item_neighbours
from shelfrank.server.training_data import TrainingData, retimed

HALF_LIVES: tuple[float | None, ...] = (7.0, 14.0, 30.0, 60.0, 120.0, None)
EASE_L2: tuple[float, ...] = (100.0, 300.0, 1000.0)
WEIGHT_GRID = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
CANDIDATES = 100
MAX_USERS = 1_000
K = 10
ROUNDS = 2

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
_DISCOUNTS = 1.0 / np.log2(np.arange(2, K + 2))


@dataclass
class Case:
    """One validation shopper: how they are represented and what they then bought."""

    user_id: str
    segment: str
    vector: FloatArray | None
    bias: float
    history: UserHistory
    truth: dict[str, IntArray]  # mode -> relevant item rows
    exclude: IntArray  # items seen before, ascending (excluded in the ``new`` mode)


@dataclass
class Candidates:
    """Per case, candidate rows and the unit-scaled component values on them."""

    rows: list[IntArray]
    values: list[npt.NDArray[np.float32]]  # (components, n) per case, as COMPONENTS
    relevant: list[npt.NDArray[np.bool_]]
    relevant_count: list[int]
    _packed: tuple[Any, ...] | None = None

    def packed(
        self,
    ) -> tuple[npt.NDArray[np.float32], IntArray, npt.NDArray[np.bool_], Any]:
        """Every case padded to the longest: values (cases, components, width), each
        case's number of candidates, relevant mask (cases, width) and ideal DCG."""
        if self._packed is None:
            width = max(max(r.size for r in self.rows), K)
            cases = len(self.rows)
            values = np.zeros((cases, len(COMPONENTS), width), np.float32)
            relevant = np.zeros((cases, width), np.bool_)
            lengths = np.array([r.size for r in self.relevant], np.int64)
            for index, (v, r) in enumerate(zip(self.values, self.relevant, strict=True)):
                values[index, :, : r.size] = v
                relevant[index, : r.size] = r
            counts = np.minimum(np.array(self.relevant_count), K)
            ideal = np.cumsum(_DISCOUNTS)[counts - 1]
            self._packed = (values, lengths, relevant, ideal)
        return self._packed


@dataclass
class BlendFit:
    blend: BlendTable
    half_life_days: float | None
    item_half_life_days: float | None
    item_item_l2: float | None
    item_item_method: str
    curve: dict[str, dict[str, float]] = field(default_factory=dict)  # half-life -> setting
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": self.blend.to_json(),
            "half_life_days": self.half_life_days,
            "item_half_life_days": self.item_half_life_days,
            "item_item": {"method": self.item_item_method, "l2": self.item_item_l2},
            "validation_ndcg_at_10_by_half_life": self.curve,
            **self.notes,
        }


def relevant_types(interactions: Interactions) -> list[int]:
    purchases = interactions.event_types == int(EventType.PURCHASE)
    if purchases.any():
        return [int(EventType.PURCHASE)]
    return [int(k) for k in (EventType.VIEW, EventType.SEARCH, EventType.ADD_TO_CART)]


def validation_split(
    interactions: Interactions, fraction: float, kind: str = "time", seed: int = 0
) -> tuple[Interactions, Interactions] | None:
    """(prefix, held out): the newest ``fraction`` of the events (``time``), or a seeded
    ``fraction`` of each shopper's items (``random``)."""
    if kind == "random":
        from shelfrank.server.evaluation.splits import random_split

        split = random_split(interactions, fraction, seed)
        if len(split.test) == 0:
            return None
        return split.train, split.test
    stamps = interactions.timestamps
    if len(interactions) == 0 or not np.isfinite(stamps).all():
        return None
    cutoff = float(np.quantile(stamps, 1 - fraction))
    later = stamps > cutoff
    if not later.any() or later.all():
        return None
    return interactions.take(~later), interactions.take(later)


def mf_scale(model: ServingModel, seed: int = 0) -> float:
    """Standard deviation of the model's scores over a sample of trained users."""
    n_users = len(model.user_ids)
    if n_users == 0 or len(model.items) == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    rows = rng.choice(n_users, size=min(256, n_users), replace=False)
    scores = model.items.scores_many(model.user_vectors[rows], model.user_biases[rows])
    spread = float(np.std(scores - scores.mean(axis=1, keepdims=True)))
    return spread if spread > 0 and math.isfinite(spread) else 1.0


def _cases(
    prefix: TrainingData,
    serving: ServingModel,
    later: Interactions,
    config: TrainConfig,
    users: FeatureTable | None,
    seed: int,
) -> list[Case]:
    """Validation shoppers by segment (built once per fit: only a trained shopper's history
    depends on the half-lives, see :func:`_with_history`)."""
    wanted = np.isin(later.event_types, relevant_types(later))
    tokens = users.as_dict() if users is not None else {}
    by_user: dict[str, list[int]] = {}
    for index, name in enumerate(later.user_ids):
        by_user.setdefault(name, []).append(index)
    rng = np.random.default_rng(seed)
    names = sorted(by_user)
    rng.shuffle(names)
    weights_by_type = config.event_weights
    cases: list[Case] = []
    counts = {"trained": 0, "fold-in": 0, "features": 0}
    for user_id in names:
        events = by_user[user_id]
        row = prefix.users.entities.get(user_id)
        if row is not None and prefix.seen.row(row).size == 0:
            row = None  # in the profiles but without events: served from features
        if row is not None:
            if counts["trained"] >= MAX_USERS:
                continue
            truth = _items(serving, later, [i for i in events if wanted[i]])
            if truth.size == 0:
                continue
            user = serving.user_vector(user_id)  # trained vector: cheap
            seen = serving.seen_rows(user_id)
            fresh = truth[~in_sorted(truth, seen)]
            cases.append(
                Case(
                    user_id,
                    "trained",
                    user.vector,
                    user.bias,
                    user.history,
                    {"repeat": truth, "new": fresh},
                    seen,
                )
            )
            counts["trained"] += 1
            continue
        user_tokens = tuple(tokens.get(user_id, ()))
        if counts["features"] < MAX_USERS:
            truth = _items(serving, later, [i for i in events if wanted[i]])
            if truth.size:
                user = serving.user_vector(user_id, tokens=user_tokens)
                empty = np.empty(0, np.int64)
                cases.append(
                    Case(
                        user_id,
                        "features",
                        user.vector,
                        user.bias,
                        user.history,
                        {"repeat": truth, "new": truth},
                        empty,
                    )
                )
                counts["features"] += 1
        ordered = sorted(events, key=lambda i: (later.timestamps[i], i))
        half = len(ordered) // 2
        if half == 0 or counts["fold-in"] >= MAX_USERS:
            continue
        past, future = ordered[:half], ordered[half:]
        truth = _items(serving, later, [i for i in future if wanted[i]])
        rows, kept = [], []
        for i in past:
            item = serving.item_ids.get(later.item_ids[i])
            kind = EventType(int(later.event_types[i]))
            if item is None or kind is EventType.DISMISS:
                continue
            rows.append(item)
            kept.append(weights_by_type[kind])
        if truth.size == 0 or not rows:
            continue
        history_rows = np.array(rows, np.int64)
        history_weights = np.array(kept, np.float32)
        folded = serving.user_vector(
            user_id,
            tokens=user_tokens,
            history_rows=history_rows,
            history_weights=history_weights,
        )
        tokens_known = np.array(serving.user_token_embeddings.known_tokens(user_tokens), np.int64)
        history = (
            UserHistory.empty()
            .merged(history_rows, history_weights, history_weights)
            .with_tokens(tokens_known)
        )
        seen = np.unique(history_rows)
        cases.append(
            Case(
                user_id,
                "fold-in",
                folded.vector,
                folded.bias,
                history,
                {"repeat": truth, "new": truth[~in_sorted(truth, seen)]},
                seen,
            )
        )
        counts["fold-in"] += 1
    return cases


def _with_history(case: Case, serving: ServingModel) -> Case:
    """``case`` with the history ``serving`` (one half-life's signals) gives it. Only a
    trained shopper's depends on the half-lives: a fold-in shopper's is built from the
    validation events, a new shopper has none; vectors come from the prefix model."""
    if case.segment != "trained":
        return case
    return replace(case, history=serving.user_vector(case.user_id).history)


def _items(serving: ServingModel, later: Interactions, indices: Sequence[int]) -> IntArray:
    rows = {serving.item_ids.get(later.item_ids[i]) for i in indices}
    return np.array(sorted(r for r in rows if r is not None), np.int64)


def _unit(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    peak = float(np.abs(values).max()) if values.size else 0.0
    return (values / peak).astype(np.float32) if peak > 0 else np.zeros(values.size, np.float32)


Votes = tuple[IntArray, npt.NDArray[np.float32], IntArray, npt.NDArray[np.float32]]


@dataclass
class StepMemo:
    """What one half-life's candidate building computes once: each case's candidates
    before the mode's exclusions (by position among its segment's cases, which both modes
    of one fit share), and the segment-trend votes of each set of profile tokens (many
    shoppers share one)."""

    shared: dict[int, tuple[IntArray, npt.NDArray[np.float32]]] = field(default_factory=dict)
    segment_votes: dict[bytes, Votes] = field(default_factory=dict)
    summer: VoteSummer = field(default_factory=VoteSummer)


def _candidates(
    cases: Sequence[Case],
    serving: ServingModel,
    signals: RankingSignals,
    mode: Mode,
    model_tops: dict[Any, Any],
    memo: StepMemo | None = None,
) -> Candidates:
    """Candidate rows and component values per case; ``model_tops`` caches each case's
    best rows by the model's score and its item-to-item votes (neither depends on the
    trend's half-life); ``memo`` what the fits of one half-life share."""
    memo = memo or StepMemo()
    trend_top = signals.trend_order()[:CANDIDATES]
    out = Candidates([], [], [], [])
    for index, case in enumerate(cases):
        truth = case.truth[mode]
        if truth.size == 0:
            continue
        found = memo.shared.get(index)
        if found is None:
            found = memo.shared[index] = _case_candidates(
                case, serving, signals, model_tops, trend_top, memo
            )
        rows, values = found
        if mode == "new" and case.exclude.size:
            kept = ~in_sorted(rows, case.exclude)
            rows, values = rows[kept], values[:, kept]
        out.rows.append(rows)
        out.values.append(values)
        out.relevant.append(in_sorted(rows, truth))
        out.relevant_count.append(int(truth.size))
    return out


def _votes(rows: IntArray, scores: npt.NDArray[np.float32]) -> Votes:
    """Voted rows and their votes, with the best ``CANDIDATES`` rows and the unit-scaled
    votes."""
    return rows, scores, _best(rows, scores), _unit(scores)


def _case_candidates(
    case: Case,
    serving: ServingModel,
    signals: RankingSignals,
    model_tops: dict[Any, Any],
    trend_top: IntArray,
    memo: StepMemo,
) -> tuple[IntArray, npt.NDArray[np.float32]]:
    """One case's candidate rows (the best of each component) and the unit-scaled
    component values on them, before any exclusion."""
    history = case.history
    # Votes depend on the neighbours and the history's strengths only: the same across
    # modes and trend half-lives. The entry keeps the neighbours it was summed from, so a
    # table at a reused id() is not mistaken for it.
    neighbours = signals.neighbours
    vote_key = (id(neighbours), case.segment, case.user_id, history.strength.tobytes())
    cached = model_tops.get(vote_key)
    if cached is None or cached[0] is not neighbours:
        cached = model_tops[vote_key] = (
            neighbours,
            _votes(*memo.summer.scores(neighbours, history.rows, np.maximum(history.strength, 0))),
        )
    item: Votes = cached[1]
    repeat = np.maximum(history.repeat, 0) * signals.repeat_rate[history.rows]
    no_rows = np.empty(0, np.int64)
    no_votes = np.empty(0, np.float32)
    segment: Votes = (no_rows, no_votes, no_rows, no_votes)
    if signals.segment_trend is not None and history.tokens.size:
        known = history.tokens[history.tokens < signals.segment_trend.rows]
        token_key = known.tobytes()
        found = memo.segment_votes.get(token_key)
        if found is None:
            found = memo.segment_votes[token_key] = _votes(
                *memo.summer.scores(signals.segment_trend, known, np.ones(known.size, np.float32))
            )
        segment = found
    parts = [trend_top, item[2], segment[2], history.rows[repeat > 0]]
    if case.vector is not None:
        key = (case.segment, case.user_id)
        top = model_tops.get(key)
        if top is None:
            mf_all = serving.items.scores(case.vector, case.bias)
            count = min(CANDIDATES, mf_all.size - 1)
            top = model_tops[key] = np.argpartition(-mf_all, count)[:CANDIDATES].astype(np.int64)
        parts.append(top)
    rows = np.unique(np.concatenate(parts))
    values = np.zeros((len(COMPONENTS), rows.size), np.float32)
    if case.vector is not None:
        mf = serving.items.scores(case.vector, case.bias, rows=rows)
        values[0] = mf / signals.mf_scale
    values[1] = signals.trend_unit[rows]
    for component, (at, unit) in (
        (2, (item[0], item[3])),
        (3, (history.rows, _unit(repeat))),
        (4, (segment[0], segment[3])),
    ):
        if at.size:
            position = np.minimum(np.searchsorted(at, rows), at.size - 1)
            inside = at[position] == rows
            values[component, inside] = unit[position[inside]]
    return rows, values


def _best(rows: IntArray, scores: npt.NDArray[np.float32]) -> IntArray:
    """The ``CANDIDATES`` rows with the highest scores."""
    if rows.size <= CANDIDATES:
        return rows
    return rows[np.argpartition(-scores, CANDIDATES - 1)[:CANDIDATES]]


def mean_ndcg(candidates: Candidates, weights: npt.NDArray[np.float32]) -> float:
    """Mean NDCG@10 of the blend ``weights`` over the cases."""
    return float(mean_ndcgs(candidates, weights[None, :])[0])


def mean_ndcgs(candidates: Candidates, trials: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Mean NDCG@10 over the cases of each row of blend weights ``trials``, all cases and
    trials in one compiled pass (ties by the lower candidate position,
    server/compiled_fit.py)."""
    if not candidates.rows:
        return np.full(trials.shape[0], np.nan)
    values, lengths, relevant, ideal = candidates.packed()
    per_case = blended_ndcg(values, trials, lengths, relevant, _DISCOUNTS, ideal)
    return np.array([row.mean() for row in per_case])


TrialScorer = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]]


def search_weights(
    candidates: Candidates, usable: Sequence[bool], score: TrialScorer | None = None
) -> tuple[npt.NDArray[np.float32], float]:
    """Coordinate ascent over ``WEIGHT_GRID`` per component (unusable ones stay 0),
    starting from the model's score alone. The trials of one component differ from the
    current weights in that component only, so they are scored together and taken in
    grid order, the first strictly better each time, as one by one. ``score`` gives each
    trial's mean NDCG@10 (default: over the cases, :func:`mean_ndcgs`)."""
    if score is None:
        score = lambda trials: mean_ndcgs(candidates, trials)  # noqa: E731
    weights = np.zeros(len(COMPONENTS), np.float32)
    weights[0 if usable[0] else 1] = 1.0
    best = float(score(weights[None, :])[0])
    for _ in range(ROUNDS):
        improved = False
        for component in range(len(COMPONENTS)):
            if not usable[component]:
                continue
            trials = []
            for value in WEIGHT_GRID:
                if component == 0 and value == 0:
                    continue  # the model's score stays: cold items come only through it
                if np.float32(value) == weights[component]:
                    continue  # the current weights, already scored
                trial = weights.copy()
                trial[component] = value
                if trial.any():
                    trials.append(trial)
            if not trials:
                continue
            scores = score(np.array(trials))
            for trial, value in zip(trials, scores, strict=True):
                if value > best + 1e-9:
                    best, weights, improved = float(value), trial, True
        if not improved:
            break
    return weights, best


def fit_blend(
    prefix_serving: Callable[[TrainingData, ItemNeighbours, BlendTable], ServingModel],
    prefix: TrainingData,
    prefix_events: Interactions,
    later: Interactions,
    config: TrainConfig,
    users: FeatureTable | None,
    *,
    progress: bool = False,
) -> BlendFit | None:
    """Weights and half-life from the validation split; None without enough shoppers.

    EASE's lambda is chosen first, by the item-to-item term alone ranking items new to
    known shoppers without decay; then every half-life is tried with it."""
    plan: list[Case] = []
    model_tops: dict[Any, Any] = {}
    notes: dict[str, Any] = {}

    def segments(
        data: TrainingData, neighbours: ItemNeighbours
    ) -> tuple[ServingModel, RankingSignals, dict[str, list[Case]]]:
        serving = prefix_serving(data, neighbours, BlendTable())
        if serving.signals is None:
            raise InvariantError("prefix model without ranking signals")
        if not plan:
            plan.extend(_cases(data, serving, later, config, users, config.seed or 0))
        by_segment: dict[str, list[Case]] = {}
        for case in plan:
            by_segment.setdefault(case.segment, []).append(_with_history(case, serving))
        return serving, serving.signals, by_segment

    undecayed = retimed(
        prefix, prefix_events, replace(config, half_life_days=None, item_half_life_days=None)
    )
    neighbours, method, l2 = _choose_neighbours(undecayed, config, segments, model_tops, notes)

    def sweep(
        stage: str,
        values: tuple[float | None, ...],
        settings: Callable[[float | None], TrainConfig],
    ) -> list[tuple[float, float | None, BlendTable, dict[str, float]]]:
        results: list[tuple[float, float | None, BlendTable, dict[str, float]]] = []
        for value in tqdm(values, desc=stage, unit="half-life", disable=not progress, leave=False):
            chosen = settings(value)
            data = retimed(prefix, prefix_events, chosen)
            serving, signals, by_segment = segments(data, neighbours)
            notes["validation_users"] = {s: len(c) for s, c in by_segment.items()}
            table, scores, bagged = _fit_segments(by_segment, serving, signals, config, model_tops)
            notes["bagged"] = {"bags": config.blend_bags, "fits": bagged}
            if scores:
                results.append((float(np.mean(list(scores.values()))), value, table, scores))
        return results

    # Stage 1: trend and repeat, item-to-item votes undecayed; stage 2: the votes' decay.
    # Ties go to the longer half-life (no decay last): the less forgotten, the better.
    def best_of(
        results: list[tuple[float, float | None, BlendTable, dict[str, float]]],
    ) -> tuple[float, float | None, BlendTable, dict[str, float]]:
        return max(results, key=lambda r: (r[0], r[1] or float("inf")))

    half_lives = HALF_LIVES if config.half_life_days is None else (config.half_life_days,)
    first = sweep(
        "blend: trend/repeat half-life",
        half_lives,
        lambda h: replace(config, half_life_days=h, item_half_life_days=None),
    )
    if not first:
        return None
    trend_half_life = best_of(first)[1]
    item_lives = HALF_LIVES if config.item_half_life_days is None else (config.item_half_life_days,)
    second = sweep(
        "blend: item-to-item half-life",
        item_lives,
        lambda h: replace(config, half_life_days=trend_half_life, item_half_life_days=h),
    )
    best = best_of(second) if second else best_of(first)

    def curve(
        results: list[tuple[float, float | None, BlendTable, dict[str, float]]],
    ) -> dict[str, dict[str, float]]:
        return {
            "none" if value is None else f"{value:g}": {"mean": mean, **scores}
            for mean, value, _, scores in results
        }

    notes["validation_ndcg_at_10_by_item_half_life"] = curve(second)
    return BlendFit(
        blend=best[2],
        half_life_days=trend_half_life,
        item_half_life_days=best[1] if second else None,
        item_item_l2=l2,
        item_item_method=method,
        curve=curve(first),
        notes=notes,
    )


def _fit_segments(
    by_segment: dict[str, list[Case]],
    serving: ServingModel,
    signals: RankingSignals,
    config: TrainConfig,
    model_tops: dict[Any, Any],
) -> tuple[BlendTable, dict[str, float], list[str]]:
    """Weights per (segment, mode) with enough validation shoppers, their NDCG@10, and
    which (segment, mode) were bagged (fewer than ``config.bag_below`` shoppers)."""
    table: dict[str, dict[str, BlendWeights]] = {}
    bagged: list[str] = []
    scores: dict[str, float] = {}
    segment_votes: dict[bytes, Votes] = {}  # the signals' segment trend: this half-life's
    summer = VoteSummer()
    for segment, segment_cases in sorted(by_segment.items()):
        if len(segment_cases) < config.min_validation_users:
            continue
        modes: tuple[Mode, ...] = ("new",) if segment == "features" else ("new", "repeat")
        memo = StepMemo(segment_votes=segment_votes, summer=summer)
        for mode in modes:
            found = _candidates(segment_cases, serving, signals, mode, model_tops, memo)
            if len(found.rows) < config.min_validation_users:
                continue
            usable = _usable(segment, segment_cases, signals)
            if config.blend_bags and len(found.rows) < config.bag_below:
                # Few shoppers: the bagged weights, and their NDCG is what the half-lives
                # are chosen by (the weights served, not the grid's lucky point).
                weights = bagged_search_weights(found, usable, config.blend_bags, config.seed or 0)
                score = mean_ndcg(found, weights)
                bagged.append(f"{segment}/{mode}")
            else:
                weights, score = search_weights(found, usable)
            chosen = BlendWeights(*(float(w) for w in weights))
            table.setdefault(segment, {})[mode] = chosen
            if segment == "features":
                table[segment]["repeat"] = chosen
            scores[f"{segment}/{mode}"] = round(score, 5)
    return BlendTable(table), scores, bagged


def bagged_search_weights(
    candidates: Candidates, usable: Sequence[bool], bags: int, seed: int
) -> npt.NDArray[np.float32]:
    """The mean of the weights :func:`search_weights` fits on ``bags`` bootstrap resamples
    of the cases (Breiman's bagging), each scaled to sum 1 first (a blend ranks alike at
    any scale), the mean scaled to a largest weight of 1. The grid's best point on a few
    shoppers is mostly chance; the mean over resamples keeps what most of them agree on."""
    rng = np.random.default_rng(seed)
    cases = len(candidates.rows)
    total = np.zeros(len(COMPONENTS), np.float64)
    # Each case's NDCG under a trial does not depend on the resample: computed once per
    # trial for all cases and shared by the resamples (their searches start alike and
    # mostly walk the same trials); a resample weighs it by how often it drew each case.
    per_case: dict[bytes, npt.NDArray[np.float64]] = {}

    def case_ndcgs(trials: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        keys = [trial.tobytes() for trial in trials]
        new = [i for i, key in enumerate(keys) if key not in per_case]
        if new:
            values, lengths, relevant, ideal = candidates.packed()
            found = blended_ndcg(values, trials[new], lengths, relevant, _DISCOUNTS, ideal)
            for i, row in zip(new, found, strict=True):
                per_case[keys[i]] = row
        return np.array([per_case[key] for key in keys])

    def resample_scorer(share: npt.NDArray[np.float64]) -> TrialScorer:
        return lambda trials: case_ndcgs(trials) @ share

    for _ in range(bags):
        counts = np.bincount(rng.integers(0, cases, cases), minlength=cases)
        scorer = resample_scorer(counts / counts.sum())
        weights, _ = search_weights(candidates, usable, scorer)
        total += weights / weights.sum()
    mean: npt.NDArray[np.float32] = (total / total.max()).astype(np.float32)
    return mean


def _usable(segment: str, cases: Sequence[Case], signals: RankingSignals) -> tuple[bool, ...]:
    """Which components a segment's fit may weigh: the model's score with a vector, the
    trend always, history terms with a history, the segment trend with profile tokens."""
    has_vector = any(c.vector is not None for c in cases)
    has_tokens = signals.segment_trend is not None and any(c.history.tokens.size for c in cases)
    history = segment != "features"
    return (has_vector, True, history, history, has_tokens)


def _choose_neighbours(
    data: TrainingData,
    config: TrainConfig,
    segments: Callable[
        [TrainingData, ItemNeighbours],
        tuple[ServingModel, RankingSignals, dict[str, list[Case]]],
    ],
    model_tops: dict[Any, Any],
    notes: dict[str, Any],
) -> tuple[ItemNeighbours, str, float | None]:
    """Neighbours by ``config.item_item``; for EASE with no lambda set, the lambda of
    ``EASE_L2`` whose item-to-item term alone ranks best (items new to known shoppers)."""
    choices: tuple[float, ...] = EASE_L2 if config.item_item_l2 is None else (config.item_item_l2,)
    found: dict[float, tuple[ItemNeighbours, str]] = {}
    for l2 in choices:
        found[l2] = item_neighbours(
            data.weights,
            method=config.item_item,
            l2=l2,
            shrink=config.knn_shrink,
            top_n=config.neighbours,
        )
        if found[l2][1] != "ease":
            return found[l2][0], found[l2][1], None
    if len(choices) == 1:
        return found[choices[0]][0], "ease", choices[0]
    alone = np.zeros(len(COMPONENTS), np.float32)
    alone[COMPONENTS.index("item")] = 1.0
    scores: dict[float, float] = {}
    for l2, (neighbours, _) in found.items():
        serving, signals, by_segment = segments(data, neighbours)
        cases = by_segment.get("trained", [])
        scores[l2] = mean_ndcg(_candidates(cases, serving, signals, "new", model_tops), alone)
    notes["ease_l2_validation_ndcg_at_10"] = {f"{k:g}": round(v, 5) for k, v in scores.items()}
    best = max(choices, key=lambda l2: (np.nan_to_num(scores[l2], nan=-1.0), -l2))
    return found[best][0], "ease", best
