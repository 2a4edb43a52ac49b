"""The on-device session model: rerank the server's scores with what the shopper just did.

The server model lags behind the shopper; the device knows the session. The session is
summarised as one vector, the decayed, weighted mean of the *unit* item vectors of the
session's events (views, carts, purchases pull with a positive weight, dismissals push with
a negative one)::

    s = sum_e w_e * t_e * p_e * v_e / |v_e|   /   sum_e |w_e| * p_e

``t_e = 0.5 ** (age_e / half_life_seconds)`` fades the whole session as it goes quiet (it is
not in the denominator, so a session several half-lives old hands the ranking back to the
model); ``p_e = 0.5 ** (rank_e / half_life_events)`` favours the latest events, ``rank_e``
counting *distinct timestamps* after the event, so events recorded in the same second
(MovieLens rates whole pages at once; offline devices batch) weigh alike whatever their
arbitrary order. ``|s| <= 1``: a coherent session pushes harder than a scattered one.

Each candidate's score becomes::

    base_i / std(base) + strength * (s · v_i / |v_i|)

Why scores are blended, not vectors (so there is no ``blended_user_vector``):

- the session term is a cosine, blind to item norms; in LightFM the norm tracks popularity,
  which the base score already carries. Blending the vectors instead (``u + c * s``, i.e. a
  dot product with raw item vectors) peaked at NDCG@10 0.090 against 0.101 on the
  validation replay (``server/evaluation/edge_replay.py``);
- it works on whatever scores the device has (a user vector, the popularity fallback, the
  server's list), because the base is only rescaled by its spread over the candidates. The
  defaults were tuned with all unseen items as candidates; reranking only the stale top 500
  keeps most of the gain (ml-100k replay: +40% NDCG@10 instead of +45%).

An optional MMR pass (``diversity > 0``) then fills the first ``diversity_depth`` positions
greedily, each time taking the best ``score - diversity * max cosine to those already
taken`` (similarity floored at 0) among the top ``DIVERSITY_POOL_FACTOR * diversity_depth``.

Everything is numpy on a few hundred rows; no randomness; ties keep the input order. Filters
(already bought, dismissed) are the caller's job: pass only recommendable candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]

# The MMR pass looks at this many times ``diversity_depth`` of the best candidates.
DIVERSITY_POOL_FACTOR = 5
# Largest strength, diversity or event weight (in size): far beyond any useful value (the
# scores are standardised), and small enough that float32 scores cannot overflow.
MAX_PULL = 1e6


def _number(config: object, name: str) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{name}: must be a number, got {value!r}")
    return float(value)


def _is_finite_number(value: object) -> bool:
    """A real number (numpy's too, not bool) that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return False
    return math.isfinite(value)


@dataclass(frozen=True)
class SessionConfig:
    """How much, and how, the session moves the ranking. Defaults: the validation replay
    of ``server/evaluation/edge_replay.py`` (never the test replay)."""

    # Time decay of an event's pull; also fades a session that has gone quiet. inf = off.
    half_life_seconds: float = 600.0
    # Recency decay in distinct timestamps (the latest moment has rank 0). inf = off.
    half_life_events: float = 1.5
    # Signed pull per event type. Views and purchases are what MovieLens-100k has (rating
    # >= 4 is a purchase, lower a view) and are tuned; a cart is taken to be as strong an
    # intent as a purchase, a search hit a weaker hint, a dismissal to push as hard as a
    # view pulls: judgement, not measurement.
    view_weight: float = 0.75
    add_to_cart_weight: float = 1.0
    purchase_weight: float = 1.0
    search_weight: float = 0.5
    dismiss_weight: float = -1.0
    # Session cosine weight, in units of the base scores' standard deviation. 0 = off.
    strength: float = 10.0
    # MMR penalty per unit of cosine to an item already placed. 0 = off.
    diversity: float = 0.0
    # How many leading positions the MMR pass fills.
    diversity_depth: int = 10
    # Only the latest events count (bounds the work per request).
    max_events: int = 50

    def __post_init__(self) -> None:
        for name in ("half_life_seconds", "half_life_events"):
            value = _number(self, name)
            if not value > 0:  # NaN fails too
                raise InvalidInputError(
                    f"{name}: must be > 0 (inf turns the decay off), got {value!r}"
                )
        for name in ("strength", "diversity"):
            value = _number(self, name)
            if not 0 <= value <= MAX_PULL:  # NaN fails too
                raise InvalidInputError(f"{name}: must be in [0, {MAX_PULL:g}], got {value!r}")
        for name in ("diversity_depth", "max_events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name}: must be an integer >= 1, got {value!r}")
        for kind in EventType:
            name = f"{kind.label}_weight"
            value = _number(self, name)
            if not abs(value) <= MAX_PULL:  # NaN fails too
                raise InvalidInputError(
                    f"{name}: must be finite, at most {MAX_PULL:g} in size, got {value!r}"
                )
            if kind is EventType.DISMISS and value > 0:
                raise InvalidInputError(
                    f"{name}: must be <= 0 (a dismissal pushes down), got {value}"
                )
            if kind is not EventType.DISMISS and value < 0:
                raise InvalidInputError(f"{name}: must be >= 0, got {value}")

    @property
    def event_weights(self) -> dict[EventType, float]:
        """The signed weight of each event type."""
        return {kind: float(getattr(self, f"{kind.label}_weight")) for kind in EventType}

    @cached_property
    def _weight_table(self) -> tuple[float, ...]:
        """Event weight by ``int(EventType)``: a tuple lookup per event."""
        table = [0.0] * (max(EventType) + 1)
        for kind, weight in self.event_weights.items():
            table[int(kind)] = weight
        return tuple(table)


@dataclass(frozen=True)
class SessionEvent:
    """One thing the shopper did in this session: the item's row in the item table, what
    they did, and when (unix seconds)."""

    row: int
    event_type: EventType
    timestamp: float

    def __post_init__(self) -> None:
        if isinstance(self.row, bool) or not isinstance(self.row, int | np.integer):
            raise InvalidInputError(f"row: must be an integer, got {self.row!r}")
        if self.row < 0:
            raise InvalidInputError(f"row: must be >= 0, got {self.row}")
        if not isinstance(self.event_type, EventType):
            raise InvalidInputError(f"event_type: must be an EventType, got {self.event_type!r}")
        if not _is_finite_number(self.timestamp):
            raise InvalidInputError(f"timestamp: must be a finite number, got {self.timestamp!r}")


@dataclass(frozen=True)
class Reranked:
    """``rows``: the candidate rows, best first (a permutation of the input). ``scores``:
    the blended score of each of ``rows``; sorted, except where the MMR pass reordered the
    leading positions."""

    rows: IndexArray
    scores: FloatArray


def _rows_and_norms(item_vectors: FloatArray, rows: IndexArray) -> tuple[FloatArray, FloatArray]:
    """The rows' vectors and their norms (1 for a zero vector: it stays at cosine 0)."""
    vectors = np.take(item_vectors, rows, axis=0).astype(np.float32, copy=False)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    norms[norms == 0] = 1.0
    return vectors, norms


def session_pulls(
    events: Sequence[SessionEvent],
    item_vectors: FloatArray,
    now: float,
    config: SessionConfig | None = None,
) -> tuple[IndexArray, FloatArray]:
    """The session's events that count (rows, repeated when an item recurs) and each one's
    coefficient: ``s = sum_e coefficient_e * v_e`` (see the module docstring).

    ``events`` in the order they happened (the last ``max_events`` are used); events later
    than ``now`` (clock skew) count as happening now. Plain Python over the few events:
    cheaper than numpy's per-call overhead at this size."""
    cfg = config or SessionConfig()
    if not _is_finite_number(now):
        raise InvalidInputError(f"now: must be a finite number, got {now!r}")
    recent = events[-cfg.max_events :]
    moments = sorted({event.timestamp for event in recent}, reverse=True)
    rank = {stamp: index for index, stamp in enumerate(moments)}
    per_event = 1.0 / cfg.half_life_events  # 0 when the half-life is inf: no decay
    per_second = 1.0 / cfg.half_life_seconds
    table = cfg._weight_table
    rows: list[int] = []
    pulls: list[float] = []
    mass = 0.0
    for event in recent:
        weight = table[event.event_type]
        if weight == 0.0:
            continue
        position = 2.0 ** (-rank[event.timestamp] * per_event)
        mass += abs(weight) * position
        age = max(now - event.timestamp, 0.0)
        rows.append(event.row)
        pulls.append(weight * position * 2.0 ** (-age * per_second))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    index = np.array(rows, dtype=np.int64)
    if int(index.max()) >= item_vectors.shape[0]:
        raise InvalidInputError(
            f"events: row {int(index.max())} outside the item table ({item_vectors.shape[0]} rows)"
        )
    _, norms = _rows_and_norms(item_vectors, index)
    return index, (np.array(pulls, dtype=np.float32) / (norms * np.float32(mass)))


def session_vector(
    events: Sequence[SessionEvent],
    item_vectors: FloatArray,
    now: float,
    config: SessionConfig | None = None,
) -> FloatArray:
    """The session summary ``s`` (see the module docstring); zeros when nothing counts."""
    rows, coefficients = session_pulls(events, item_vectors, now, config)
    if rows.size == 0:
        return np.zeros(int(item_vectors.shape[1]), dtype=np.float32)
    vectors = np.take(item_vectors, rows, axis=0).astype(np.float32, copy=False)
    return (coefficients @ vectors).astype(np.float32, copy=False)


def spread(base: FloatArray) -> float:
    """The standard deviation the rerank divides base scores by (0: all equal)."""
    centred = base - base.mean()
    return float(np.sqrt(centred @ centred / base.size))


def rerank(
    candidate_rows: npt.ArrayLike,
    base_scores: npt.ArrayLike,
    item_vectors: FloatArray,
    events: Sequence[SessionEvent],
    now: float,
    config: SessionConfig | None = None,
) -> Reranked:
    """Candidates ordered by base score blended with the session (module docstring).

    ``base_scores[i]`` is the model's score of ``candidate_rows[i]`` (user · item + biases,
    or any score where higher is better). Ties keep the candidates' given order, so without
    events (or with ``strength`` 0 and no diversity) this is the base order, exactly."""
    cfg = config or SessionConfig()
    rows = np.asarray(candidate_rows, dtype=np.int64).reshape(-1)
    base = np.asarray(base_scores, dtype=np.float32).reshape(-1)
    if base.shape != rows.shape:
        raise InvalidInputError(
            f"base_scores: {base.size} scores for {rows.size} candidate_rows; need one each"
        )
    if rows.size == 0:
        return Reranked(rows, base.copy())
    if rows.min() < 0 or rows.max() >= item_vectors.shape[0]:
        raise InvalidInputError(
            f"candidate_rows: outside the item table ({item_vectors.shape[0]} rows)"
        )
    if not np.isfinite(base).all():
        raise InvalidInputError("base_scores: must be finite (filter candidates instead of -inf)")
    deviation = spread(base)
    scores = base / np.float32(deviation) if deviation > 0 else base.copy()
    if cfg.strength > 0 and events:
        session = session_vector(events, item_vectors, now, cfg)
        if session.any():
            vectors, norms = _rows_and_norms(item_vectors, rows)
            scores += np.float32(cfg.strength) * (vectors @ session) / norms
    order = np.argsort(-scores, kind="stable")
    if cfg.diversity > 0 and rows.size > 1:
        order = _mmr(order, scores, item_vectors, rows, cfg)
    return Reranked(rows[order], scores[order])


def _mmr(
    order: IndexArray,
    scores: FloatArray,
    item_vectors: FloatArray,
    rows: IndexArray,
    cfg: SessionConfig,
) -> IndexArray:
    """Greedy MMR over the leading positions; the rest keep their order."""
    depth = min(cfg.diversity_depth, order.size)
    pool = order[: min(order.size, DIVERSITY_POOL_FACTOR * depth)]
    vectors, norms = _rows_and_norms(item_vectors, rows[pool])
    unit = vectors / norms[:, None]
    relevance = scores[pool]
    # after[j, i]: the value of i once j is placed (cosine floored at 0); one small matmul
    after = relevance[None, :] - np.float32(cfg.diversity) * np.maximum(unit @ unit.T, 0.0)
    value = relevance.copy()  # relevance minus the penalty of the closest item placed
    taken: list[int] = []
    for _ in range(depth):
        pick = int(np.argmax(value))  # first maximum: pool order breaks ties
        taken.append(pick)
        np.minimum(value, after[pick], out=value)
        value[pick] = -np.inf
    free = np.ones(pool.size, dtype=bool)
    free[taken] = False
    return np.concatenate([pool[taken], pool[free], order[pool.size :]])


__all__ = [
    "Reranked",
    "SessionConfig",
    "SessionEvent",
    "rerank",
    "session_pulls",
    "session_vector",
    "spread",
]
