"""Blended ranking: the hybrid model's score plus item-to-item, repeat and trend signals.

For a user in segment ``s`` (how the user is represented: trained, fold-in, features,
popularity) and mode ``m`` (``new``: seen items are excluded by the caller; ``repeat``:
the shopper may buy again), the score of item ``i`` is

    w_mf * mf(u, i) / mf_scale             LightFM: u·v_i + b_i + b_u
  + w_trend * trend(i) / max(trend)        time-decayed popularity
  + w_item * item(u, i) / max_j |item(u, j)|  item-to-item: sum_h strength_h * S[h, i]
  + w_repeat * repeat(u, i) / max_j ...    decayed purchase frequency * item repeat rate
  + w_segment * segment(u, i) / max_j ...  what is trending among shoppers who share a
                                           profile token with u (mean over u's tokens)

with the weights ``w`` fitted per (segment, mode) on a validation split at training time
(``shelfrank.server.blend_fit``). The two sparse terms are per-user normalised, so a long
history does not drown the model's score; the dense terms are globally scaled, so the
dense part is a linear model and its top candidates come from the exact (pruned) search.

Top k is exact: candidates are the best ``k + margin`` items by the model's score, the
best by trend and the best ``SPARSE_CANDIDATES`` by the sparse terms; an item outside them
scores at most the sum of the three cut-off values, so when the k-th candidate beats that
bound the candidates hold the exact top k (ties broken by lower row, as a full scan does),
and otherwise a pool eight times larger is tried, then the full catalogue is scored. The
server runs the same ranking compiled (``shelfrank.server.compiled_blend``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.scoring import IndexArray, ScoringTable, TopK, top_k

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Mode = Literal["new", "repeat"]
COMPONENTS = ("mf", "trend", "item", "repeat", "segment")
SEGMENTS = ("trained", "fold-in", "features", "popularity")
MODES: tuple[Mode, ...] = ("new", "repeat")
# Extra model-score candidates beyond k: at 100k items the certificate held for every one
# of 400 shoppers with 10 (benchmarks/RESULTS.md); a failure retries with RETRY_SCALE
# times the pool before scoring the whole catalogue.
CANDIDATE_MARGIN = 10
RETRY_SCALE = 8
# Items taken by their sparse (item-to-item, repeat, segment) score alone.
SPARSE_CANDIDATES = 200
# Neighbour tables up to this many entries keep a transpose for explanations (12 bytes an
# entry: 24 MB at most).
TRANSPOSE_MAX = 2_000_000


@dataclass(frozen=True)
class BlendWeights:
    """Weights of the four components for one (segment, mode)."""

    mf: float = 1.0
    trend: float = 0.0
    item: float = 0.0
    repeat: float = 0.0
    segment: float = 0.0

    def __post_init__(self) -> None:
        for name in COMPONENTS:
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise InvalidInputError(
                    f"blend weight {name}: must be finite and >= 0, got {value}"
                )

    def to_json(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in COMPONENTS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlendWeights:
        unknown = sorted(set(data) - set(COMPONENTS))
        if unknown:
            raise InvalidInputError(f"blend weights: unknown component(s) {', '.join(unknown)}")
        return cls(**{k: float(v) for k, v in data.items()})


MF_ONLY = BlendWeights()


@dataclass(frozen=True)
class BlendTable:
    """Weights per segment and mode; missing entries mean the model's score alone."""

    weights: Mapping[str, Mapping[str, BlendWeights]] = field(default_factory=dict)

    def get(self, segment: str, mode: Mode) -> BlendWeights:
        """The weights of (segment, mode); a fold-in shopper without weights of its own
        (none were in the validation split) has a history like a trained one and borrows
        the trained weights."""
        found = self.weights.get(segment, {}).get(mode)
        if found is None and segment == "fold-in":
            found = self.weights.get("trained", {}).get(mode)
        return MF_ONLY if found is None else found

    def to_json(self) -> dict[str, dict[str, dict[str, float]]]:
        return {s: {m: w.to_json() for m, w in modes.items()} for s, modes in self.weights.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlendTable:
        table: dict[str, dict[str, BlendWeights]] = {}
        for segment, modes in data.items():
            if segment not in SEGMENTS:
                raise InvalidInputError(f"blend: unknown segment {segment!r}")
            for mode, weights in dict(modes).items():
                if mode not in MODES:
                    raise InvalidInputError(f"blend: unknown mode {mode!r}")
                found = BlendWeights.from_json(weights)
                if not any(getattr(found, name) > 0 for name in COMPONENTS):
                    # every score would be 0: each shopper would get the first k rows
                    raise InvalidInputError(f"blend: the weights of {segment}/{mode} are all 0")
                table.setdefault(segment, {})[mode] = found
        return cls(table)


def row_offsets(indptr: IndexArray, rows: IndexArray) -> tuple[IndexArray, IndexArray]:
    """Positions in a CSR array of every entry of ``rows`` (row after row), and each row's
    length: a gather of many rows without a Python loop."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
    return offsets.astype(np.int64), lengths.astype(np.int64)


@dataclass(frozen=True)
class ItemNeighbours:
    """Item-to-item weights, row ``h`` holding the items that history item ``h`` votes for
    (CSR: ``indptr``, ``indices``, ``weights``; a weight may be negative; a row's entries in
    no particular order)."""

    indptr: IndexArray
    indices: IndexArray
    weights: FloatArray
    # How many items the indices may name (default: as many as rows, item to item).
    items: int = -1

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or self.indptr.size == 0 or self.indptr[0] != 0:
            raise InvalidInputError("item neighbours: indptr must be 1-d and start at 0")
        if self.indices.shape != self.weights.shape or self.indptr[-1] != self.indices.size:
            raise InvalidInputError("item neighbours: indices, weights and indptr disagree")
        if np.any(np.diff(self.indptr) < 0):
            raise InvalidInputError("item neighbours: indptr must not decrease")
        if self.items < 0:
            object.__setattr__(self, "items", int(self.indptr.size - 1))
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= self.items):
            raise InvalidInputError("item neighbours: indices outside the item rows")
        # One NaN would make the numpy and the compiled blend scale the votes differently.
        if not np.all(np.isfinite(self.weights)):
            raise InvalidInputError("item neighbours: weights must be finite")

    @classmethod
    def empty(cls, items: int) -> ItemNeighbours:
        return cls(np.zeros(items + 1, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))

    def voters(self) -> ItemNeighbours | None:
        """The transpose: row ``i`` lists the rows that vote for item ``i`` (ascending), with
        their weights; what explaining a few items needs. Built on first use and kept, for
        tables up to ``TRANSPOSE_MAX`` entries (None above: it would double their memory)."""
        found = self.__dict__.get("_voters")
        if found is None and self.indices.size <= TRANSPOSE_MAX:
            order = np.argsort(self.indices, kind="stable")  # by target, then by voter
            voter_of = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.indptr))
            indptr = np.zeros(self.items + 1, np.int64)
            np.cumsum(np.bincount(self.indices, minlength=self.items), out=indptr[1:])
            found = ItemNeighbours(indptr, voter_of[order], self.weights[order], self.rows)
            object.__setattr__(self, "_voters", found)  # a cache, not part of the value
        return found

    @property
    def rows(self) -> int:
        return int(self.indptr.size - 1)

    def scores(self, rows: IndexArray, strengths: FloatArray) -> tuple[IndexArray, FloatArray]:
        """Summed votes of the history ``rows`` (weighted by ``strengths``): the items that
        receive any vote, ascending, and their scores."""
        if rows.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        offsets, lengths = row_offsets(self.indptr, rows)
        total = int(offsets.size)
        if total == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        targets = self.indices[offsets]
        votes = self.weights[offsets] * np.repeat(strengths.astype(np.float32), lengths)
        if total * 8 < self.items:
            return _summed(targets, votes)
        # Many votes for the catalogue's size: one dense pass beats sorting them.
        dense = np.bincount(targets, weights=votes, minlength=self.items)
        voted = np.zeros(self.items, np.bool_)
        voted[targets] = True
        found = np.flatnonzero(voted)
        return found.astype(np.int64), dense[found].astype(np.float32)


@dataclass(frozen=True)
class UserHistory:
    """Items a user interacted with (ascending, unique) and two strengths per item:
    ``strength`` (decayed interaction weight, for item-to-item votes) and ``repeat``
    (decayed purchase frequency, for buying again); and the rows of the user's profile
    tokens in the model's user token vocabulary (for the segment trend)."""

    rows: IndexArray
    strength: FloatArray
    repeat: FloatArray
    tokens: IndexArray = field(default_factory=lambda: np.empty(0, np.int64))

    # What ranking summed from this history per neighbour table (the peak of its votes,
    # which scales them), so that explaining the same request need not sum every vote
    # again. Derived from the fields, so kept outside them, and
    # only once something is remembered (most histories are never explained).
    def remember(self, table: ItemNeighbours, derived: Any) -> None:
        self.__dict__[f"_derived_{id(table)}"] = (table, derived)

    def recalled(self, table: ItemNeighbours) -> Any:
        """What ranking recorded for ``table`` (None: it did not rank with it)."""
        found = self.__dict__.get(f"_derived_{id(table)}")
        return found[1] if found is not None and found[0] is table else None

    @classmethod
    def empty(cls) -> UserHistory:
        return cls(np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.float32))

    def with_tokens(self, tokens: IndexArray) -> UserHistory:
        return UserHistory(self.rows, self.strength, self.repeat, tokens)

    def merged(self, rows: IndexArray, strength: FloatArray, repeat: FloatArray) -> UserHistory:
        """This history plus more (strengths add up per item)."""
        if rows.size == 0:
            return self
        all_rows = np.concatenate([self.rows, rows])
        found, out_strength = _summed(all_rows, np.concatenate([self.strength, strength]))
        _, out_repeat = _summed(all_rows, np.concatenate([self.repeat, repeat]))
        return UserHistory(found, out_strength, out_repeat, self.tokens)


@dataclass
class RankingSignals:
    """What blended ranking needs beyond the model's vectors."""

    trend: FloatArray  # per item, time-decayed popularity (>= 0)
    repeat_rate: FloatArray  # per item, smoothed share of buyers who bought again
    neighbours: ItemNeighbours
    blend: BlendTable
    mf_scale: float = 1.0  # spread of the model's scores, so weights are comparable
    # Per user profile token (rows of the model's user token vocabulary), the items most
    # trending among the shoppers who have it; None: no segment trend.
    segment_trend: ItemNeighbours | None = None
    # Item rows by trend, best first (ties by lower row); built on first use.
    _trend_order: IndexArray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.trend.shape[0]
        if self.trend.ndim != 1 or self.repeat_rate.shape != (n,):
            raise InvalidInputError(
                "ranking signals: trend and repeat_rate need one value per item"
            )
        if self.neighbours.items != n or self.neighbours.rows != n:
            raise InvalidInputError(
                f"ranking signals: neighbours cover {self.neighbours.items} items"
            )
        if self.segment_trend is not None and self.segment_trend.items != n:
            raise InvalidInputError("ranking signals: the segment trend covers other items")
        if not np.all(np.isfinite(self.trend)) or np.any(self.trend < 0):
            raise InvalidInputError("ranking signals: trend must be finite and >= 0")
        if not np.all(np.isfinite(self.repeat_rate)) or np.any(self.repeat_rate < 0):
            raise InvalidInputError("ranking signals: repeat_rate must be finite and >= 0")
        if not (np.isfinite(self.mf_scale) and self.mf_scale > 0):
            raise InvalidInputError(f"ranking signals: mf_scale must be > 0, got {self.mf_scale}")
        peak = float(self.trend.max()) if n else 0.0
        self._trend_unit = (self.trend / peak if peak > 0 else self.trend).astype(np.float32)

    @property
    def items(self) -> int:
        return int(self.trend.shape[0])

    @property
    def trend_unit(self) -> FloatArray:
        """Trend scaled to [0, 1]."""
        return self._trend_unit

    def trend_order(self) -> IndexArray:
        order = self._trend_order
        if order is None:
            order = self._trend_order = np.lexsort(
                (np.arange(self.items), -self._trend_unit)
            ).astype(np.int64)
        return order

    def with_items_appended(self, added: int) -> RankingSignals:
        """The same signals for a catalogue grown by ``added`` items (no signal yet)."""
        if added == 0:
            return self
        neighbours = self.neighbours
        indptr = np.concatenate([neighbours.indptr, np.full(added, neighbours.indptr[-1])])
        segment = self.segment_trend
        if segment is not None:  # its rows are tokens: only the item range grows
            segment = ItemNeighbours(
                segment.indptr, segment.indices, segment.weights, items=self.items + added
            )
        return RankingSignals(
            np.concatenate([self.trend, np.zeros(added, np.float32)]),
            np.concatenate([self.repeat_rate, np.zeros(added, np.float32)]),
            ItemNeighbours(indptr, neighbours.indices, neighbours.weights),
            self.blend,
            self.mf_scale,
            segment,
        )


def _summed(rows: IndexArray, values: npt.NDArray[np.floating]) -> tuple[IndexArray, FloatArray]:
    """Distinct ``rows`` (ascending) and the sum of ``values`` per row."""
    if rows.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sums = np.add.reduceat(values[order].astype(np.float64), starts)
    return ordered[starts].astype(np.int64), sums.astype(np.float32)


def _peak(values: FloatArray) -> float:
    return float(np.abs(values).max()) if values.size else 0.0


def _unit(values: FloatArray, peak: float | None = None) -> FloatArray:
    """Scaled by the largest magnitude (``peak``, when known), so the best item scores 1."""
    if peak is None:
        peak = _peak(values)
    return (values / peak).astype(np.float32) if peak > 0 else np.zeros_like(values)


def sparse_scores(
    signals: RankingSignals, history: UserHistory, weights: BlendWeights
) -> tuple[IndexArray, FloatArray]:
    """The weighted item-to-item and repeat terms: rows (ascending) and their sum."""
    parts: list[tuple[IndexArray, FloatArray]] = []
    if weights.item > 0 and history.rows.size:
        # Votes may be negative (EASE's weights are): such items are scored down.
        rows, votes = signals.neighbours.scores(history.rows, np.maximum(history.strength, 0))
        peak = _peak(votes)
        history.remember(signals.neighbours, peak)
        parts.append((rows, weights.item * _unit(votes, peak)))
    if weights.repeat > 0 and history.rows.size:
        repeat = np.maximum(history.repeat, 0) * signals.repeat_rate[history.rows]
        positive = repeat > 0
        parts.append((history.rows[positive], weights.repeat * _unit(repeat[positive])))
    segment = signals.segment_trend
    if weights.segment > 0 and segment is not None and history.tokens.size:
        known = history.tokens[history.tokens < segment.rows]
        rows, votes = segment.scores(known, np.ones(known.size, np.float32))
        peak = _peak(votes)
        history.remember(segment, peak)
        parts.append((rows, weights.segment * _unit(votes, peak)))
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if len(parts) == 1:
        return parts[0][0], parts[0][1].astype(np.float32)
    return _summed(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _dense(
    items: ScoringTable,
    signals: RankingSignals,
    vector: FloatArray | None,
    bias: float,
    weights: BlendWeights,
    rows: IndexArray | None = None,
) -> FloatArray:
    n = len(items) if rows is None else int(rows.size)
    out = np.zeros(n, np.float32)
    if vector is not None and weights.mf > 0:
        out += np.float32(weights.mf / signals.mf_scale) * items.scores(vector, bias, rows=rows)
    if weights.trend > 0:
        trend = signals.trend_unit if rows is None else signals.trend_unit[rows]
        out += np.float32(weights.trend) * trend
    return out


def blended_scores(
    items: ScoringTable,
    signals: RankingSignals,
    vector: FloatArray | None,
    bias: float,
    history: UserHistory,
    weights: BlendWeights,
) -> FloatArray:
    """Blended scores of every item (the reference the fast path must equal)."""
    out = _dense(items, signals, vector, bias, weights)
    rows, values = sparse_scores(signals, history, weights)
    out[rows] += values
    return out


def blended_scores_at(
    items: ScoringTable,
    signals: RankingSignals,
    vector: FloatArray | None,
    bias: float,
    history: UserHistory,
    weights: BlendWeights,
    rows: IndexArray,
) -> FloatArray:
    """:func:`blended_scores` of the given rows only (what ranking a short list needs)."""
    out = _dense(items, signals, vector, bias, weights, rows=rows)
    _add_sparse(out, rows, *sparse_scores(signals, history, weights))
    return out


def _add_sparse(
    out: FloatArray, rows: IndexArray, sparse_rows: IndexArray, sparse_values: FloatArray
) -> None:
    """Adds to ``out`` (scores of ``rows``) the sparse values of those rows that have one
    (``sparse_rows`` ascending)."""
    if sparse_rows.size and rows.size:
        position = np.minimum(np.searchsorted(sparse_rows, rows), sparse_rows.size - 1)
        hit = sparse_rows[position] == rows
        out[hit] += sparse_values[position[hit]]


def _trend_candidates(
    signals: RankingSignals, count: int, blocked: BoolArray | None
) -> tuple[IndexArray, float]:
    """The best ``count`` items by trend that are not blocked, and the trend of the last
    one taken (every other unblocked item trends at most that); -inf when all were taken."""
    order = signals.trend_order()
    if blocked is not None:
        # Usually a few items are blocked: filter a head of the order first (a gather and
        # a mask over the whole catalogue cost more than the rest of a request at 100k
        # items), the whole order only when the head holds too few unblocked ones.
        head = order[: 4 * count + 64]
        kept = head[~blocked[head]]
        order = kept if kept.size > count or head.size == order.size else order[~blocked[order]]
    taken = order[:count]
    bound = float(signals.trend_unit[taken[-1]]) if order.size > count else -np.inf
    return taken, bound


class BlendedKernel(Protocol):
    """:func:`blended_top_k` in compiled code (the server's
    :mod:`shelfrank.server.compiled_blend`, attached as the table's ``kernel``): the same
    exact top k, or None where it does not apply (the numpy ranking then runs)."""

    def blended_top_k(
        self,
        items: ScoringTable,
        signals: RankingSignals,
        vector: FloatArray | None,
        bias: float,
        history: UserHistory,
        weights: BlendWeights,
        k: int,
        *,
        exclude: IndexArray | None = None,
        allowed: BoolArray | None = None,
    ) -> TopK | None: ...


def _top_k_of_candidates(
    items: ScoringTable,
    signals: RankingSignals,
    vector: FloatArray | None,
    bias: float,
    weights: BlendWeights,
    k: int,
    sparse_rows: IndexArray,
    sparse_values: FloatArray,
    blocked: BoolArray | None,
    exclude: IndexArray | None,
    allowed: BoolArray | None,
    *,
    pool: int,
    sparse_pool: int,
) -> TopK | None:
    """The top k among the best ``pool`` items by the model's score and by trend and the
    best ``sparse_pool`` by the sparse terms, when it is provably the top k of all: any
    other item scores at most the sum of the three cut-off values. None otherwise."""
    # The best sparse items are candidates; any other scores at most the last one taken
    # there (or 0, outside the sparse support).
    bound = 0.0
    sparse_best = sparse_rows
    if sparse_rows.size > sparse_pool:
        taken = np.argpartition(-sparse_values, sparse_pool - 1)[:sparse_pool]
        sparse_best = sparse_rows[taken]
        bound = max(float(sparse_values[taken].min()), 0.0)
    parts = [sparse_best]
    if vector is not None and weights.mf > 0:
        found = items.recommend(vector, bias, pool, exclude=exclude, allowed=allowed)
        parts.append(found.indices)
        if len(found) == pool:
            bound += weights.mf / signals.mf_scale * float(found.scores[-1])
        else:
            bound = -np.inf  # every eligible item is a candidate
    if weights.trend > 0 and bound > -np.inf:
        trending, trend_bound = _trend_candidates(signals, pool, blocked)
        parts.append(trending)
        bound += weights.trend * trend_bound
    candidates = np.unique(np.concatenate(parts))  # ascending: ties break by row
    if blocked is not None and candidates.size:
        candidates = candidates[~blocked[candidates]]
    if candidates.size < k:
        return None
    scores = _dense(items, signals, vector, bias, weights, rows=candidates)
    _add_sparse(scores, candidates, sparse_rows, sparse_values)
    best = top_k(scores, k)
    if len(best) == k and float(best.scores[-1]) > bound:
        return TopK(candidates[best.indices], best.scores)
    return None


def check_request(
    items: int, history: UserHistory, exclude: IndexArray | None, allowed: BoolArray | None
) -> None:
    """Refuses rows outside the catalogue: numpy would wrap a negative row around and the
    compiled kernel, which does not check bounds, would read past its arrays."""
    if allowed is not None and allowed.shape != (items,):
        raise InvalidInputError(f"allowed: expected a mask of {items} rows, got {allowed.shape}")
    for name, rows in (("exclude", exclude), ("history", history.rows)):
        if rows is not None and rows.size and (rows.min() < 0 or rows.max() >= items):
            raise InvalidInputError(f"{name}: rows must lie in [0, {items})")
    if history.tokens.size and history.tokens.min() < 0:
        raise InvalidInputError("history: token rows must be >= 0")


def blended_top_k(
    items: ScoringTable,
    signals: RankingSignals,
    vector: FloatArray | None,
    bias: float,
    history: UserHistory,
    weights: BlendWeights,
    k: int,
    *,
    exclude: IndexArray | None = None,
    allowed: BoolArray | None = None,
    sparse_candidates: int = SPARSE_CANDIDATES,
) -> TopK:
    """Exact top k of :func:`blended_scores` among the allowed, non-excluded rows."""
    # A plain attribute lookup: isinstance on a runtime protocol costs microseconds.
    compiled = getattr(items.kernel, "blended_top_k", None)
    if compiled is not None:  # it checks the request itself where it ranks
        found: TopK | None = compiled(
            items, signals, vector, bias, history, weights, k, exclude=exclude, allowed=allowed
        )
        if found is not None:
            return found
    check_request(len(items), history, exclude, allowed)
    n = len(items)
    blocked = None if allowed is None else ~allowed
    if exclude is not None and exclude.size:
        blocked = np.zeros(n, np.bool_) if blocked is None else blocked.copy()
        blocked[exclude] = True
    sparse_rows, sparse_values = sparse_scores(signals, history, weights)
    if blocked is not None and sparse_rows.size:
        eligible = ~blocked[sparse_rows]
        sparse_rows, sparse_values = sparse_rows[eligible], sparse_values[eligible]
    # A small pool first; when its bound does not prove the top k, one eight times larger;
    # only then the whole catalogue.
    for scale in (1, RETRY_SCALE):
        found = _top_k_of_candidates(
            items, signals, vector, bias, weights, k, sparse_rows, sparse_values, blocked,
            exclude, allowed, pool=scale * (k + CANDIDATE_MARGIN),
            sparse_pool=scale * sparse_candidates,
        )  # fmt: skip
        if found is not None:
            return found
    full = blended_scores(items, signals, vector, bias, history, weights)
    if blocked is not None:
        full[blocked] = -np.inf
    return top_k(full, k)


__all__ = [
    "COMPONENTS",
    "MF_ONLY",
    "MODES",
    "SEGMENTS",
    "BlendTable",
    "BlendWeights",
    "BlendedKernel",
    "ItemNeighbours",
    "Mode",
    "RankingSignals",
    "UserHistory",
    "blended_scores",
    "blended_scores_at",
    "blended_top_k",
    "check_request",
    "row_offsets",
    "sparse_scores",
]
