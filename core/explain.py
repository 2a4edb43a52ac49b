"""Why an item was recommended: the exact decomposition of its score.

A hybrid score is ``u · v_i + b_i + b_u``. Both vectors are sums of parts: the user's
vector of its profile tokens' embeddings (or the history items folded in, plus the prior
they moved it from) and a rest of its own; the item's vector of its feature tokens'
embeddings and a rest of its own (what its interactions taught the model beyond its
features). The dot product of two sums credits each pair of parts; each pair's credit is
split equally between its user part and its item part (the Shapley split of a product),
so a user part ``a`` gets ``a · v_i / 2`` and an item part ``b`` gets ``u · b / 2``.
Fold-in makes ``u`` satisfy ``l2 (u - u0) = sum_h w_h v_h - W E_p[v]`` at its optimum,
so a history item ``h`` is credited with ``(w_h / l2) v_h`` and the rest
(``user:baseline``, what the whole catalogue pulls) is whatever remains of ``u``.

With blended ranking (core/blend.py) the model's part is scaled by its weight, and the
other terms are contributions too: ``signal:trend``, ``signal:segment``, and each history
item's item-to-item vote and buy-again term (``history:<item_id>``).

Every explanation is exact: the contributions kept (the largest ``top`` in size) plus
``rest`` sum to the score. Computed only when asked for, on the few items of a response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shelfrank.core.blend import MF_ONLY, BlendWeights, ItemNeighbours, Mode, UserHistory, _unit
from shelfrank.core.serving import ServingModel, UserVector

FloatArray = npt.NDArray[np.float32]
Vector = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]
DEFAULT_TOP = 6
BECAUSE_MAX = 3
REASONS = (
    "personalized",
    "because_history",
    "similar_item",
    "popular",
    "exploration",
    "new_item",
)


@dataclass(frozen=True)
class Explanation:
    reason: str  # one of REASONS
    contributions: tuple[tuple[str, float], ...]  # largest in size first
    rest: float  # the contributions left out
    because: tuple[str, ...] = ()  # up to three item ids of the user's history


def summarise(
    parts: dict[str, float], score: float, reason: str, because: Sequence[str], top: int
) -> Explanation:
    """The ``top`` largest parts and the rest: ``score`` minus them, so the explanation
    sums to the score exactly (the parts sum to it up to float error)."""
    ordered = sorted(parts.items(), key=lambda item: (-abs(item[1]), item[0]))[:top]
    kept = tuple((source, float(value)) for source, value in ordered)
    return Explanation(reason, kept, float(score - sum(v for _, v in kept)), tuple(because))


def _user_parts(
    model: ServingModel, user_id: str, user: UserVector, vector: Vector
) -> dict[str, Vector]:
    """Parts summing to the user's vector ``vector`` (float64), named by source."""
    parts: dict[str, Vector] = {}
    prior = user.prior.astype(np.float64) if user.prior is not None else None
    if user.folded_rows.size:
        l2 = model.fold_in.l2
        ids = model.item_ids
        weights = np.bincount(
            np.searchsorted(np.unique(user.folded_rows), user.folded_rows),
            weights=user.folded_weights.astype(np.float64),
        )
        for row, weight in zip(np.unique(user.folded_rows).tolist(), weights, strict=True):
            key = f"history:{ids.id_of(row)}"
            part = (weight / l2) * model.items.item_vectors[row].astype(np.float64)
            parts[key] = parts.get(key, 0.0) + part
        if prior is not None:
            parts.update(_prior_parts(model, user_id, user, prior))
        known = sum(parts.values(), np.zeros_like(vector))
        parts["user:baseline"] = vector - known
        return parts
    return _prior_parts(model, user_id, user, vector)


def _prior_parts(
    model: ServingModel, user_id: str, user: UserVector, vector: npt.NDArray[np.float64]
) -> dict[str, Vector]:
    """Parts of a trained or features-composed vector: its profile tokens and its own."""
    embeddings = model.user_token_embeddings
    tokens = user.tokens
    parts: dict[str, Vector] = {}
    if tokens.size:
        weight = 1.0 / (embeddings.identity_weight + tokens.size)
        if embeddings.weighting == "unit":
            weight = 1.0
        for row in tokens.tolist():
            parts[f"user:{embeddings.vocabulary.id_of(row)}"] = weight * embeddings.embeddings[
                row
            ].astype(np.float64)
    rest = vector - sum(parts.values(), np.zeros_like(vector))
    if np.any(rest != 0):
        parts["user:own"] = rest
    return parts


def _item_parts(model: ServingModel, row: int) -> dict[str, Vector]:
    """Parts summing to an item's vector: its feature tokens' and its own."""
    embeddings = model.item_token_embeddings
    tokens = model.item_tokens.row(row)
    vector = model.items.item_vectors[row].astype(np.float64)
    parts: dict[str, Vector] = {}
    if tokens.size:
        weight = (
            1.0
            if embeddings.weighting == "unit"
            else 1.0 / (embeddings.identity_weight + tokens.size)
        )
        for column in tokens.tolist():
            parts[f"item:{embeddings.vocabulary.id_of(column)}"] = weight * embeddings.embeddings[
                column
            ].astype(np.float64)
    rest = vector - sum(parts.values(), np.zeros_like(vector))
    if np.any(np.abs(rest) > 1e-12):
        parts["item:own"] = rest
    return parts


def _weights(model: ServingModel, user: UserVector, mode: Mode) -> BlendWeights:
    if model.signals is None:
        return MF_ONLY
    segment = user.source
    if segment == "trained" and user.history.rows.size == 0:
        segment = "features"
    return model.signals.blend.get(segment, mode)


def explain_scores(
    model: ServingModel,
    user_id: str,
    user: UserVector,
    rows: IndexArray,
    scores: FloatArray,
    *,
    mode: Mode,
    explored: Sequence[bool] = (),
    trained_items: int | None = None,
    top: int = DEFAULT_TOP,
) -> list[Explanation]:
    """Explanations of the given items' scores for a user (see the module docstring).
    ``explored``: which items fill exploration slots; ``trained_items``: rows from it on
    were not trained (new items)."""
    weights = _weights(model, user, mode)
    signals = model.signals if weights != MF_ONLY else None
    vector = None if user.vector is None else user.vector.astype(np.float64)
    user_parts = {} if vector is None else _user_parts(model, user_id, user, vector)
    mf_factor = 1.0 if signals is None else weights.mf / signals.mf_scale
    vote_peak = repeat_peak = segment_peak = 0.0
    history = user.history
    if signals is not None and history.rows.size:
        strength = np.maximum(history.strength, 0)
        if weights.item > 0:
            _, voted = signals.neighbours.scores(history.rows, strength)
            vote_peak = float(np.abs(voted).max()) if voted.size else 0.0
        if weights.repeat > 0:
            repeat = np.maximum(history.repeat, 0) * signals.repeat_rate[history.rows]
            repeat_peak = float(repeat.max()) if repeat.size else 0.0
    segment_votes: dict[int, float] = {}
    if signals is not None and weights.segment > 0 and signals.segment_trend is not None:
        segment = signals.segment_trend
        known = history.tokens[history.tokens < segment.rows]
        seg_rows, seg_values = segment.scores(known, np.ones(known.size, np.float32))
        unit = _unit(seg_values)
        segment_peak = 1.0
        segment_votes = dict(zip(seg_rows.tolist(), unit.tolist(), strict=True))
    ids = model.item_ids
    out: list[Explanation] = []
    for position, (row, score) in enumerate(zip(rows.tolist(), scores.tolist(), strict=True)):
        parts: dict[str, float] = {}
        if vector is None and signals is None:
            parts["signal:popularity"] = float(model.item_popularity[row])
        if vector is not None and (signals is None or weights.mf > 0):
            item_vector = model.items.item_vectors[row].astype(np.float64)
            for source, part in user_parts.items():
                parts[source] = parts.get(source, 0.0) + mf_factor * 0.5 * float(part @ item_vector)
            for source, part in _item_parts(model, row).items():
                parts[source] = parts.get(source, 0.0) + mf_factor * 0.5 * float(vector @ part)
            parts["bias:item"] = mf_factor * float(model.items.item_biases[row])
            parts["bias:user"] = mf_factor * float(user.bias)
        if signals is not None:
            if weights.trend > 0:
                parts["signal:trend"] = weights.trend * float(signals.trend_unit[row])
            if vote_peak > 0:
                _add_votes(parts, model, signals.neighbours, history, row, weights.item / vote_peak)
            if repeat_peak > 0:
                found = np.searchsorted(history.rows, row)
                if found < history.rows.size and history.rows[found] == row:
                    value = max(float(history.repeat[found]), 0.0) * float(signals.repeat_rate[row])
                    key = f"history:{ids.id_of(row)}"
                    parts[key] = parts.get(key, 0.0) + weights.repeat * value / repeat_peak
            if segment_peak > 0 and row in segment_votes:
                parts["signal:segment"] = weights.segment * segment_votes[row]
        because = _because(parts, model, user, row)
        reason = _reason(
            parts,
            user,
            explored=bool(explored[position]) if explored else False,
            new=trained_items is not None and row >= trained_items,
        )
        out.append(summarise(parts, float(score), reason, because, top))
    return out


def _add_votes(
    parts: dict[str, float],
    model: ServingModel,
    neighbours: ItemNeighbours,
    history: UserHistory,
    row: int,
    scale: float,
) -> None:
    """Each history item's item-to-item vote for ``row``."""
    rows = history.rows
    strength = np.maximum(history.strength, 0)
    ids = model.item_ids
    for h, s in zip(rows.tolist(), strength.tolist(), strict=True):
        start, end = int(neighbours.indptr[h]), int(neighbours.indptr[h + 1])
        targets = neighbours.indices[start:end]
        hit = np.flatnonzero(targets == row)
        if hit.size and s > 0:
            vote = float(neighbours.weights[start + int(hit[0])]) * s * scale
            key = f"history:{ids.id_of(h)}"
            parts[key] = parts.get(key, 0.0) + vote


def explain_similar(
    model: ServingModel, query_row: int, rows: IndexArray, scores: FloatArray, *, top: int
) -> list[Explanation]:
    """Explanations of SimilarItems' cosine scores: ``cos = v_q · v_i / (|v_q| |v_i|)``,
    split between the parts of the query item (``query:<token>``, ``query:own``) and of
    the candidate (``item:<token>``, ``item:own``) as a dot product is."""
    norms = model.items.norms
    query = model.items.item_vectors[query_row].astype(np.float64)
    query_parts = _item_parts(model, query_row)
    out = []
    for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
        scale = 1.0 / (float(norms[query_row]) * float(norms[row]))
        item = model.items.item_vectors[row].astype(np.float64)
        parts: dict[str, float] = {}
        for source, part in query_parts.items():
            key = "query:" + source.split(":", 1)[1]
            parts[key] = parts.get(key, 0.0) + 0.5 * scale * float(part @ item)
        for source, part in _item_parts(model, row).items():
            parts[source] = parts.get(source, 0.0) + 0.5 * scale * float(query @ part)
        out.append(
            summarise(parts, float(score), "similar_item", [model.item_ids.id_of(query_row)], top)
        )
    return out


def _because(parts: dict[str, float], model: ServingModel, user: UserVector, row: int) -> list[str]:
    """Up to three history items supporting the item most: by their share of the score,
    else (nothing of the history is in the score) by the cosine of their vectors."""
    credited = sorted(
        ((v, k[len("history:") :]) for k, v in parts.items() if k.startswith("history:") and v > 0),
        key=lambda pair: (-pair[0], pair[1]),
    )
    if credited:
        return [item for _, item in credited[:BECAUSE_MAX]]
    rows = np.union1d(
        np.union1d(user.history.rows, user.seen), user.folded_rows[user.folded_weights > 0]
    )
    rows = rows[rows != row].astype(np.int64)
    if rows.size == 0:
        return []
    vectors, norms = model.items.item_vectors, model.items.norms
    cosine = (vectors[rows] @ vectors[row]) / (norms[rows] * norms[row])
    order = np.lexsort((rows, -cosine))[:BECAUSE_MAX]
    return [model.item_ids.id_of(int(rows[i])) for i in order if cosine[i] > 0]


def _reason(parts: dict[str, float], user: UserVector, *, explored: bool, new: bool) -> str:
    if explored:
        return "exploration"
    if new:
        return "new_item"
    if user.source == "popularity" and not any(k.startswith("history:") for k in parts):
        return "popular"
    history = sum(v for k, v in parts.items() if k.startswith("history:") and v > 0)
    positive = sum(v for v in parts.values() if v > 0)
    if positive > 0 and history > positive / 2:
        return "because_history"
    return "personalized"


__all__ = [
    "BECAUSE_MAX",
    "DEFAULT_TOP",
    "REASONS",
    "Explanation",
    "explain_scores",
    "explain_similar",
    "summarise",
]
