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
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from shelfrank.core.blend import (
    MF_ONLY,
    BlendWeights,
    ItemNeighbours,
    Mode,
    RankingSignals,
    UserHistory,
    _peak,
    _unit,
    row_offsets,
)
from shelfrank.core.ids import IdMap
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


# Per token vocabulary, its names with a prefix ("item:", "user:"), built once: naming the
# parts of every explained item one lookup at a time cost more than the arithmetic.
_PREFIXED: dict[tuple[str, int], tuple[IdMap, list[str]]] = {}


def _prefixed(prefix: str, vocabulary: IdMap) -> list[str]:
    found = _PREFIXED.get((prefix, id(vocabulary)))
    if found is not None and found[0] is vocabulary:
        return found[1]
    names = [prefix + name for name in vocabulary.ids]
    if len(_PREFIXED) >= 16:  # models replaced since: forget theirs
        _PREFIXED.clear()
    _PREFIXED[(prefix, id(vocabulary))] = (vocabulary, names)
    return names


def summarise(
    parts: dict[str, float], score: float, reason: str, because: Sequence[str], top: int
) -> Explanation:
    """The ``top`` largest parts and the sum of the others (``rest``). The parts are the
    score's exact decomposition, so kept + rest equals ``score`` up to float error (the
    tests check 1e-4); ``score`` only stands in for a score without parts (an unknown
    item's -inf, all rest)."""
    ordered = sorted(parts.items(), key=lambda item: (-abs(item[1]), item[0]))
    kept = tuple((source, float(value)) for source, value in ordered[:top])
    rest = float(sum(value for _, value in ordered[top:])) if parts else float(score)
    return Explanation(reason, kept, rest, tuple(because))


def _user_parts(
    model: ServingModel, user: UserVector, vector: Vector
) -> tuple[list[str], Vector, IndexArray, Vector]:
    """Parts summing to the user's vector ``vector`` (float64): named ones (their names
    and a row each), and one per history item folded in (its rows, ascending, and their
    parts)."""
    prior = user.prior.astype(np.float64) if user.prior is not None else None
    if user.folded_rows.size:
        rows, inverse = np.unique(user.folded_rows, return_inverse=True)
        weights = np.bincount(inverse, weights=user.folded_weights.astype(np.float64))
        folded = (weights / model.fold_in.l2)[:, None] * model.items.item_vectors[rows].astype(
            np.float64
        )
        names, named = (
            _prior_parts(model, user, prior) if prior is not None else ([], _no_parts(vector))
        )
        known = named.sum(axis=0) + folded.sum(axis=0)
        return (
            [*names, "user:baseline"],
            np.concatenate((named, (vector - known)[None, :])),
            rows.astype(np.int64),
            folded,
        )
    return *_prior_parts(model, user, vector), _NO_ROWS, _NO_VECTORS


def _no_parts(vector: Vector) -> Vector:
    return np.zeros((0, vector.size))


# Nothing folded in (read-only: shared by every call). Each numpy call costs microseconds
# here, and an explanation makes dozens.
_NO_ROWS: IndexArray = np.empty(0, np.int64)
_NO_ROWS.setflags(write=False)
_NO_VECTORS: Vector = np.zeros((0, 0))
_NO_VECTORS.setflags(write=False)


def _prior_parts(
    model: ServingModel, user: UserVector, vector: npt.NDArray[np.float64]
) -> tuple[list[str], Vector]:
    """Parts of a trained or features-composed vector: its profile tokens and its own,
    as names and a row each (one fancy index for all tokens: a numpy call per token cost
    more than the arithmetic). Rows summed in order, as adding them one by one would."""
    embeddings = model.user_token_embeddings
    tokens = user.tokens
    if not tokens.size:  # all its own (vector - 0 is vector, to the bit)
        return (["user:own"], vector[None, :]) if vector.any() else ([], _no_parts(vector))
    weight = 1.0 / (embeddings.identity_weight + tokens.size)
    if embeddings.weighting == "unit":
        weight = 1.0
    prefixed = _prefixed("user:", embeddings.vocabulary)
    names = [prefixed[row] for row in tokens.tolist()]
    parts = weight * embeddings.embeddings[tokens].astype(np.float64)
    rest = vector - parts.sum(axis=0)
    if rest.any():  # a NaN counts as nonzero, as rest != 0 would
        names.append("user:own")
        parts = np.concatenate((parts, rest[None, :]))
    return names, parts


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
        names = _prefixed("item:", embeddings.vocabulary)
        for column in tokens.tolist():
            parts[names[column]] = weight * embeddings.embeddings[column].astype(np.float64)
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


class _Parts:
    """The parts of a list's scores as one matrix: a row per item, a column per named part
    (blocks added in turn) and one per history item (votes are many; numpy sums them)."""

    def __init__(self, items: int, history: IndexArray) -> None:
        self.items = items
        self.history = history  # ascending item rows
        self.history_values = np.zeros((items, history.size))
        self.names: list[str] = []
        self._blocks: list[Vector] = []

    def block(self, names: Sequence[str], values: Vector) -> None:
        """Named parts: ``values`` has a row per item and a column per name."""
        self.names.extend(names)
        self._blocks.append(values.reshape(self.items, len(names)))

    def columns(self, rows: IndexArray) -> IndexArray:
        return np.searchsorted(self.history, rows).astype(np.int64)

    def add_history(self, positions: IndexArray, columns: IndexArray, values: Vector) -> None:
        """Adds ``values`` at (item position, history column) pairs, repeated pairs summed
        (one bincount: ``np.add.at`` costs far more per element)."""
        if positions.size == 0:
            return
        width = self.history.size
        self.history_values += np.bincount(
            positions * width + columns, weights=values, minlength=self.items * width
        ).reshape(self.items, width)

    def named(self) -> Vector:
        if not self._blocks:
            return np.zeros((self.items, 0))
        return np.concatenate(self._blocks, axis=1)


def summary_columns(
    values: Vector, offset: int, count: int, supporters: int
) -> tuple[IndexArray, Vector, Vector, IndexArray, Vector]:
    """Per row of ``values`` (an item's parts; history parts from column ``offset``): the
    ``count`` columns largest in size and their values, what the other columns sum to,
    and the ``supporters`` largest history columns (as column offsets from ``offset``) and
    their values. Ties go to the lower column (the compiled
    :mod:`shelfrank.server.compiled_explain` picks the same)."""
    history_values = values[:, offset:]
    largest = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :count]
    chosen = np.take_along_axis(values, largest, axis=1)
    rests = values.sum(axis=1) - chosen.sum(axis=1)
    strongest = np.argsort(-history_values, axis=1, kind="stable")[:, :supporters]
    return largest, chosen, rests, strongest, np.take_along_axis(history_values, strongest, axis=1)


# Per item: the columns of the parts kept and their values, what the others sum to, the
# strongest history columns (from the first history column) and their values.
Summary = tuple[IndexArray, Vector, Vector, IndexArray, Vector]
# The parts' names, where the history columns start, the summary, and per item the sum of
# the positive history parts, of all positive parts, and whether any history part is not 0.
Parts = tuple[list[str], int, Summary, Vector, Vector, npt.NDArray[np.bool_]]


def _model_term(
    model: ServingModel, weights: BlendWeights, vector: Vector | None
) -> tuple[bool, bool, float]:
    """Whether the score is the item's popularity (no vector, no blend), whether it has
    the model's term, and that term's weight as core/blend.py weighs it."""
    signals = model.signals if weights != MF_ONLY else None
    popularity = vector is None and signals is None
    has_model = vector is not None and (signals is None or weights.mf > 0)
    return popularity, has_model, 1.0 if signals is None else weights.mf / signals.mf_scale


def _numpy_parts(
    model: ServingModel,
    user: UserVector,
    vector: Vector | None,
    rows: IndexArray,
    history: IndexArray,
    weights: BlendWeights,
    top: int,
) -> Parts:
    """The parts of ``rows``' scores as a matrix (:class:`_Parts`), term by term, and
    their summary."""
    signals = model.signals if weights != MF_ONLY else None
    parts = _Parts(rows.size, history)
    popularity, has_model, factor = _model_term(model, weights, vector)
    if popularity:
        parts.block(["signal:popularity"], model.item_popularity[rows].astype(np.float64))
    if has_model and vector is not None:
        _add_model_parts(parts, model, user, vector, rows, factor)
    if signals is not None:
        _add_signal_parts(parts, model, signals, user.history, weights, rows)
    named = parts.named()
    values = np.concatenate((named, parts.history_values), axis=1)
    offset = named.shape[1]
    count = min(top, values.shape[1])
    supporters = min(BECAUSE_MAX, history.size)
    select = getattr(model.items.kernel, "summary_columns", summary_columns)
    summary: Summary = select(values, offset, count, supporters)
    history_positive = np.maximum(parts.history_values, 0.0).sum(axis=1)
    positive = history_positive + np.maximum(named, 0.0).sum(axis=1)
    any_history = (parts.history_values != 0).any(axis=1)
    return parts.names, offset, summary, history_positive, positive, any_history


class ModelTerms(NamedTuple):
    """What the compiled explanation (the server's ``explained_parts``) reads of the
    model's term; every array always of one type, so one compiled signature serves all."""

    has_popularity: bool  # the score is the item's popularity (no vector, no blend)
    popularity: FloatArray
    has_model: bool  # the score has the model's term ``factor * (u · v + b_i + b_u)``
    factor: float
    parts_given: bool  # ``user_parts`` holds the parts of ``u``, else its tokens make them
    user_parts: Vector  # named parts of ``u``, a row each (``_user_parts``)
    user_tokens: IndexArray  # the user's profile tokens (``_prior_parts``)
    user_embeddings: FloatArray
    user_token_weight: float
    folded_columns: IndexArray  # the history column of each folded-in item
    folded: Vector  # its part of ``u``, a row each
    item_vectors: FloatArray
    item_biases: FloatArray
    user_bias: float
    vector: Vector
    token_indptr: IndexArray
    token_indices: IndexArray
    token_embeddings: FloatArray
    unit: bool  # token weight 1, else 1 / (identity_weight + the item's token count)
    unit_weight: float
    identity_weight: float


class SignalTerms(NamedTuple):
    """What it reads of the blend's other terms (a zero weight: the term is absent)."""

    trend_weight: float
    trend_unit: FloatArray
    vote_weight: float
    voters_indptr: IndexArray  # the neighbour table's transpose (``ItemNeighbours.voters``)
    voters_indices: IndexArray
    voters_weights: FloatArray
    history_rows: IndexArray  # the user's history (``UserHistory``)
    history_strength: FloatArray
    history_repeat: FloatArray
    history_tokens: IndexArray
    vote_peak: float
    repeat_weight: float
    repeat_rate: FloatArray
    segment_weight: float
    segment_indptr: IndexArray  # the segment table's transpose
    segment_indices: IndexArray
    segment_weights: FloatArray
    segment_rows: int
    segment_peak: float


def _writable(values: npt.NDArray[Any], dtype: type) -> npt.NDArray[Any]:
    """``values`` as a writable, contiguous array of ``dtype`` (itself when it is one): a
    compiled kernel is compiled per argument type, read-only arrays included."""
    flags = values.flags
    if values.dtype == dtype and flags.writeable and flags.c_contiguous:
        return values
    return np.array(values, dtype, order="C")


def _compiled_parts(
    compiled: Any,
    model: ServingModel,
    user: UserVector,
    vector: Vector | None,
    rows: IndexArray,
    history: IndexArray,
    weights: BlendWeights,
    top: int,
) -> Parts | None:
    """:func:`_numpy_parts` in one compiled call (``compiled``: the server's
    ``explained_parts``), or None where it cannot run: no blend signals, or a neighbour
    table too large to keep transposed."""
    signals = model.signals
    voters = None if signals is None else signals.neighbours.voters()
    if signals is None or voters is None:
        return None
    blended = weights != MF_ONLY
    history = _writable(history, np.int64)
    signal_terms = _signal_terms(signals, voters, user.history, weights, blended)
    if signal_terms is None:
        return None
    popularity, has_model, factor = _model_term(model, weights, vector)
    terms, user_names = _model_terms(model, user, vector, history, popularity, has_model, factor)
    user_count, token_columns, offset, summary, history_positive, positive, any_history = compiled(
        _writable(rows, np.int64), history, terms, signal_terms, int(top)
    )
    names = ["signal:popularity"] if terms.has_popularity else []
    if has_model:
        if not terms.parts_given:  # the profile tokens' parts, and the vector's own if not 0
            token_names = _prefixed("user:", model.user_token_embeddings.vocabulary)
            user_names = [token_names[token] for token in terms.user_tokens.tolist()]
            user_names += ["user:own"] * (user_count - len(user_names))
        item_names = _prefixed("item:", model.item_token_embeddings.vocabulary)
        names += user_names
        names += [item_names[token] for token in token_columns.tolist()]
        names += ["item:own", "bias:item", "bias:user"]
    if signal_terms.trend_weight > 0:
        names.append("signal:trend")
    if signal_terms.segment_weight > 0:
        names.append("signal:segment")
    return names, offset, summary, history_positive, positive, any_history


def _model_terms(
    model: ServingModel,
    user: UserVector,
    vector: Vector | None,
    history: IndexArray,
    popularity: bool,
    has_model: bool,
    factor: float,
) -> tuple[ModelTerms, list[str]]:
    """The model's term for the kernel, and the names of the user's parts where numpy
    made them (a folded-in user: the prior's parts, the history items', the baseline)."""
    dims = model.items.item_vectors.shape[1]
    user_names: list[str] = []
    user_parts, folded_columns, folded = np.zeros((0, dims)), np.zeros(0, np.int64), None
    parts_given = vector is not None and has_model and bool(user.folded_rows.size)
    if parts_given and vector is not None:
        user_names, named, folded_rows, folded_parts = _user_parts(model, user, vector)
        user_parts = _writable(named, np.float64).reshape(len(user_names), dims)
        folded_columns = np.searchsorted(history, folded_rows).astype(np.int64)
        folded = _writable(folded_parts, np.float64)
    user_embeddings = model.user_token_embeddings
    user_tokens = _writable(user.tokens, np.int64)
    embeddings = model.item_token_embeddings
    terms = ModelTerms(
        has_popularity=popularity,
        popularity=model.item_popularity,
        has_model=has_model,
        factor=float(factor),
        parts_given=parts_given,
        user_parts=user_parts,
        user_tokens=user_tokens,
        user_embeddings=user_embeddings.embeddings,
        user_token_weight=(
            1.0
            if user_embeddings.weighting == "unit" or not user_tokens.size
            else 1.0 / (float(user_embeddings.identity_weight) + user_tokens.size)
        ),
        folded_columns=folded_columns,
        folded=np.zeros((0, dims)) if folded is None else folded,
        item_vectors=model.items.item_vectors,
        item_biases=model.items.item_biases,
        user_bias=float(user.bias),
        vector=np.zeros(dims) if vector is None else _writable(vector, np.float64),
        token_indptr=model.item_tokens.indptr,
        token_indices=model.item_tokens.indices,
        token_embeddings=embeddings.embeddings,
        unit=embeddings.weighting == "unit",
        unit_weight=1.0,
        identity_weight=float(embeddings.identity_weight),
    )
    return terms, user_names


def _signal_terms(
    signals: RankingSignals,
    voters: ItemNeighbours,
    past: UserHistory,
    weights: BlendWeights,
    blended: bool,
) -> SignalTerms | None:
    """The blend's other terms for the kernel, weighted as ``_add_signal_parts`` weighs
    them (None: the segment table is too large to keep transposed)."""
    vote_weight = weights.item if blended and past.rows.size else 0.0
    vote_peak = _vote_peak(signals.neighbours, past) if vote_weight > 0 else 0.0
    segment = signals.segment_trend
    segment_weight = weights.segment if blended and past.tokens.size else 0.0
    segment_voters, segment_peak = voters, 0.0
    if segment is None or segment_weight <= 0:
        segment_weight = 0.0
    else:
        found = segment.voters()
        if found is None:
            return None
        segment_voters = found
        recorded = past.recalled(segment)
        if recorded is None:
            known = past.tokens[past.tokens < segment.rows]
            recorded = _peak(segment.scores(known, np.ones(known.size, np.float32))[1])
        segment_peak = recorded
    return SignalTerms(
        trend_weight=float(weights.trend) if blended else 0.0,
        trend_unit=signals.trend_unit,
        vote_weight=float(vote_weight) if vote_peak else 0.0,
        voters_indptr=voters.indptr,
        voters_indices=voters.indices,
        voters_weights=voters.weights,
        history_rows=_writable(past.rows, np.int64),
        history_strength=_writable(past.strength, np.float32),
        history_repeat=_writable(past.repeat, np.float32),
        history_tokens=_writable(past.tokens, np.int64),
        vote_peak=float(vote_peak),
        repeat_weight=float(weights.repeat) if blended and past.rows.size else 0.0,
        repeat_rate=signals.repeat_rate,
        segment_weight=float(segment_weight),
        segment_indptr=segment_voters.indptr,
        segment_indices=segment_voters.indices,
        segment_weights=segment_voters.weights,
        segment_rows=segment.rows if segment is not None else 0,
        segment_peak=float(segment_peak),
    )


def _summaries(
    summary: Summary,
    names: list[str],
    offset: int,
    history: IndexArray,
    model: ServingModel,
    reasons: list[str],
) -> list[Explanation]:
    """Every item's explanation: its largest parts (named: ``names`` below ``offset``,
    history items above), the sum of the others, and the (up to three) history items of
    the largest positive parts."""
    largest, chosen, rests_array, strongest, strongest_array = summary
    count, supporters = largest.shape[1], strongest.shape[1]
    ids = model.item_ids
    # Out of numpy once, names looked up for the whole list in one pass: indexing element
    # by element, item by item, cost more than the arithmetic.
    history_rows = history.tolist()
    id_list = ids.ids  # rows of the model's own tables: no bounds check per lookup
    kept_names = [
        names[column] if column < offset else "history:" + id_list[history_rows[column - offset]]
        for column in largest.ravel().tolist()
    ]
    kept_values = chosen.ravel().tolist()
    rests = rests_array.tolist()  # what the kept parts leave out
    # Largest first, ties to the lower column (the lower history row): the positive ones
    # are the first of each item's.
    supporting = (strongest_array > 0).sum(axis=1).tolist()
    because_ids = [id_list[row] for row in history[strongest].ravel().tolist()]
    out = []
    for position in range(len(reasons)):
        start = position * count
        values = kept_values[start : start + count]
        kept = tuple(zip(kept_names[start : start + count], values, strict=True))
        if 0.0 in values:  # a zero part is not named
            kept = tuple(pair for pair in kept if pair[1])
        # Already largest first (so parts of one size are next to each other); parts of
        # one size go by name. Sizes all distinct (the usual case) say so at once.
        if len(set(map(abs, values))) < count and any(
            b and abs(a) == abs(b) for a, b in pairwise(values)
        ):
            kept = tuple(sorted(kept, key=lambda item: (-abs(item[1]), item[0])))
        first = position * supporters
        because = tuple(because_ids[first : first + supporting[position]])
        out.append(Explanation(reasons[position], kept, rests[position], because))
    return out


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
    stepwise: bool = False,
) -> list[Explanation]:
    """Explanations of the given items' scores for a user (see the module docstring).
    ``explored``: which items fill exploration slots; ``trained_items``: rows from it on
    were not trained (new items). A few matrix products for the whole list, or one call
    of the scoring table's compiled kernel (the server's); ``stepwise``: term by term
    even so, as for tables too large to keep transposed (the server's warm-up compiles
    both ways)."""
    weights = _weights(model, user, mode)
    rows = np.asarray(rows, np.int64)
    history = user.history.rows  # ascending, distinct
    if user.folded_rows.size:
        history = np.union1d(history, user.folded_rows).astype(np.int64)
    vector = None if user.vector is None else user.vector.astype(np.float64)
    compiled = getattr(model.items.kernel, "explained_parts", None)
    found = None
    if compiled is not None and not stepwise:
        found = _compiled_parts(compiled, model, user, vector, rows, history, weights, top)
    if found is None:
        found = _numpy_parts(model, user, vector, rows, history, weights, top)
    names, offset, summary, history_positive_array, positive_array, any_history_array = found
    positive = positive_array.tolist()
    history_positive_list = history_positive_array.tolist()
    popularity_user = user.source == "popularity"
    any_history = any_history_array.tolist() if popularity_user else [True] * rows.size
    reasons = [
        reason_of(
            explored=bool(len(explored) and explored[position]),
            new=trained_items is not None and row >= trained_items,
            popular=popularity_user and not any_history[position],
            history_positive=history_positive_list[position],
            positive=positive[position],
        )
        for position, row in enumerate(rows.tolist())
    ]
    out = _summaries(summary, names, offset, history, model, reasons)
    if not all(explained.because for explained in out):
        # Nothing of the history is in some scores: name the closest history items.
        closest = _closest_in_history(model, rows, _history_of(user))
        out = [e if e.because else replace(e, because=tuple(closest[p])) for p, e in enumerate(out)]
    return out


def _history_of(user: UserVector) -> IndexArray:
    return np.union1d(
        np.union1d(user.history.rows, user.seen), user.folded_rows[user.folded_weights > 0]
    ).astype(np.int64)


def _add_model_parts(
    parts: _Parts,
    model: ServingModel,
    user: UserVector,
    vector: Vector,
    rows: IndexArray,
    factor: float,
) -> None:
    """The model's score ``u · v + b_i + b_u`` split into its user and item parts."""
    items = model.items.item_vectors[rows].astype(np.float64)
    user_names, user_parts, folded_rows, folded = _user_parts(model, user, vector)
    if user_names:
        parts.block(user_names, 0.5 * factor * (items @ user_parts.T))
    if folded_rows.size:
        parts.history_values[:, parts.columns(folded_rows)] += 0.5 * factor * (items @ folded.T)
    embeddings = model.item_token_embeddings
    credits = getattr(model.items.kernel, "token_credits", token_credits)
    columns, credit, own = credits(
        model.item_tokens.indptr,
        model.item_tokens.indices,
        embeddings.embeddings,
        1.0 if embeddings.weighting == "unit" else None,
        float(embeddings.identity_weight),
        model.items.item_vectors,
        rows,
        vector,
        0.5 * factor,
    )
    names = _prefixed("item:", embeddings.vocabulary)
    parts.block([names[t] for t in columns.tolist()], credit)
    fixed = np.empty((rows.size, 3))  # filled column by column: column_stack costs more
    fixed[:, 0] = own
    fixed[:, 1] = model.items.item_biases[rows]
    fixed[:, 1] *= factor
    fixed[:, 2] = factor * float(user.bias)
    parts.block(["item:own", "bias:item", "bias:user"], fixed)


def token_credits(
    indptr: IndexArray,
    indices: IndexArray,
    embeddings: FloatArray,
    unit_weight: float | None,
    identity_weight: float,
    item_vectors: FloatArray,
    rows: IndexArray,
    vector: Vector,
    half_factor: float,
) -> tuple[IndexArray, Vector, Vector]:
    """The item side of ``rows``' model scores: each (item, feature token) pair's credit
    ``half_factor * (w e_t) · u`` (a column per pair, zero outside its item's row), the
    pairs' tokens, and each item's own credit ``half_factor * (v_i - sum_t w e_t) · u``.
    ``w`` is ``unit_weight``, or ``1 / (identity_weight + the item's token count)``. The
    server runs it compiled (:mod:`shelfrank.server.compiled_explain`)."""
    offsets, lengths = row_offsets(indptr, rows)
    total = int(offsets.size)
    owners = np.repeat(np.arange(rows.size), lengths)
    weight: Vector = (
        np.full(total, unit_weight)
        if unit_weight is not None
        else (1.0 / (identity_weight + lengths[owners])).astype(np.float64)
    )
    columns = indices[offsets]
    token_vectors = weight[:, None] * embeddings[columns].astype(np.float64)
    # A column per (item, token): an item's tokens are distinct, so each of its parts is
    # one column, with no grouping of the list's tokens first.
    membership = np.zeros((rows.size, total))
    membership[owners, np.arange(total)] = 1.0
    credit = membership * (half_factor * (token_vectors @ vector))
    own = item_vectors[rows].astype(np.float64) - membership @ token_vectors
    return columns.astype(np.int64), credit, half_factor * (own @ vector)


def _add_signal_parts(
    parts: _Parts,
    model: ServingModel,
    signals: RankingSignals,
    history: UserHistory,
    weights: BlendWeights,
    rows: IndexArray,
) -> None:
    """The blend's other terms: trend, each history item's item-to-item vote and
    buy-again term, the segment trend (scaled as core/blend.py scales them)."""
    if history.rows.size and (weights.item > 0 or weights.repeat > 0):
        member = np.zeros(signals.items, np.bool_)
        member[rows] = True
        order = np.argsort(rows)
    if weights.trend > 0:
        parts.block(["signal:trend"], weights.trend * signals.trend_unit[rows].astype(np.float64))
    if history.rows.size and weights.item > 0:
        _add_votes(
            parts,
            signals.neighbours,
            history,
            weights.item,
            rows,
            member,
            order,
            model.items.kernel,
        )
    if history.rows.size and weights.repeat > 0:
        repeat = np.maximum(history.repeat, 0) * signals.repeat_rate[history.rows]
        peak = float(repeat.max()) if repeat.size else 0.0
        chosen = member[history.rows] & (repeat > 0)
        if peak > 0 and chosen.any():
            bought = history.rows[chosen]
            at_position = order[np.searchsorted(rows[order], bought)].astype(np.int64)
            parts.add_history(
                at_position,
                parts.columns(bought),
                weights.repeat * repeat[chosen].astype(np.float64) / peak,
            )
    segment = signals.segment_trend
    if weights.segment > 0 and segment is not None and history.tokens.size:
        known = history.tokens[history.tokens < segment.rows]
        values = _segment_units(segment, known, rows, history.recalled(segment), model.items.kernel)
        parts.block(["signal:segment"], weights.segment * values.astype(np.float64))


def _segment_units(
    segment: ItemNeighbours,
    known: IndexArray,
    rows: IndexArray,
    peak: float | None,
    kernel: object = None,
) -> FloatArray:
    """The segment term of ``rows`` (unweighted): the votes of the user's tokens ``known``
    scaled by the largest over every item, ``peak``, as core/blend.py scales them. Only
    ``rows``' votes are summed when ranking recorded the peak; else every item's.
    ``kernel``: the scoring table's; one with ``member_votes`` sums them compiled."""
    voters = segment.voters()
    if peak is None or voters is None:
        voted_rows, votes = segment.scores(known, np.ones(known.size, np.float32))
        unit = _unit(votes)
        values = np.zeros(rows.size, np.float32)
        if voted_rows.size:  # voted_rows ascending
            at = np.minimum(np.searchsorted(voted_rows, rows), voted_rows.size - 1)
            hit = voted_rows[at] == rows
            values[hit] = unit[at[hit]]
        return values
    if not peak:
        return np.zeros(rows.size, np.float32)
    member = np.zeros(segment.rows, np.bool_)
    member[known] = True
    compiled = getattr(kernel, "member_votes", None)
    if compiled is not None:  # the same sums in one compiled loop (server)
        summed = compiled(voters.indptr, voters.indices, voters.weights, rows, member)
    else:
        summed = member_votes(voters.indptr, voters.indices, voters.weights, rows, member)
    return _unit(summed.astype(np.float32), peak)


def member_votes(
    indptr: IndexArray,
    indices: IndexArray,
    weights: FloatArray,
    rows: IndexArray,
    member: npt.NDArray[np.bool_],
) -> Vector:
    """Per row of ``rows``, the sum of its entries' weights (a CSR table's) whose index is
    a ``member``: summed in float64 in entry order, as ``ItemNeighbours.scores`` sums them
    (the server's :mod:`shelfrank.server.compiled_explain` sums the same, in one loop)."""
    offsets, lengths = row_offsets(indptr, rows)
    hit = member[indices[offsets]]
    positions = np.repeat(np.arange(rows.size, dtype=np.int64), lengths)[hit]
    summed = np.bincount(positions, weights=weights[offsets[hit]], minlength=rows.size)
    return summed.astype(np.float64, copy=False)


def _vote_peak(neighbours: ItemNeighbours, history: UserHistory) -> float:
    """The largest summed item-to-item vote over every item, which core/blend.py scales
    the term by: recorded by this request's ranking, else summed again."""
    peak: float | None = history.recalled(neighbours)
    if peak is not None:
        return peak
    strength = np.maximum(history.strength, 0).astype(np.float32)
    offsets, lengths = row_offsets(neighbours.indptr, history.rows)
    if not offsets.size:
        return 0.0
    summed = np.bincount(
        neighbours.indices[offsets],
        weights=neighbours.weights[offsets] * np.repeat(strength, lengths),
        minlength=neighbours.items,
    )
    # Rounded to float32 as ranking's summed votes are (core.blend.ItemNeighbours).
    return float(np.abs(summed.astype(np.float32)).max())


def _add_votes(
    parts: _Parts,
    neighbours: ItemNeighbours,
    history: UserHistory,
    weight: float,
    rows: IndexArray,
    member: npt.NDArray[np.bool_],
    order: IndexArray,
    kernel: object = None,
) -> None:
    """Each history item's item-to-item vote for each of ``rows``, scaled as core/blend.py
    scales the term (by the largest summed vote over every item). ``kernel``: the scoring
    table's compiled kernel; one with ``add_history_votes`` (the server's
    :mod:`shelfrank.server.compiled_explain`) adds the votes in one call."""
    strength = np.maximum(history.strength, 0).astype(np.float32)
    peak = _vote_peak(neighbours, history)
    if not peak:
        return
    voters = neighbours.voters()
    if voters is not None:
        # From the recommended items' side: their voters that are in the history.
        compiled = getattr(kernel, "add_history_votes", None)
        if compiled is not None:  # the same arithmetic in one compiled loop (server)
            columns = parts.columns(history.rows)
            compiled(
                voters.indptr,
                voters.indices,
                voters.weights,
                rows,
                history.rows,
                columns,
                strength,
                weight,
                peak,
                parts.history_values,
            )
            return
        offsets, lengths = row_offsets(voters.indptr, rows)
        voter = voters.indices[offsets]
        at = np.minimum(np.searchsorted(history.rows, voter), history.rows.size - 1)
        hit = np.flatnonzero(history.rows[at] == voter)
        positions = np.repeat(np.arange(rows.size, dtype=np.int64), lengths)[hit]
        by_history = at[hit]
        vote_weights = voters.weights[offsets[hit]]
    else:
        offsets, lengths = row_offsets(neighbours.indptr, history.rows)
        targets = neighbours.indices[offsets]
        hit = np.flatnonzero(member[targets])
        # The history item of each hit: the last row starting at or before it.
        by_history = np.searchsorted(np.cumsum(lengths), hit, side="right")
        positions = order[np.searchsorted(rows[order], targets[hit])].astype(np.int64)
        vote_weights = neighbours.weights[offsets[hit]]
    value = weight * vote_weights.astype(np.float64) * strength[by_history] / peak
    parts.add_history(positions, parts.columns(history.rows[by_history]), value)


def _closest_in_history(
    model: ServingModel, rows: IndexArray, history: IndexArray
) -> list[list[str]]:
    """Per row, the (up to three) history items of the highest positive cosine."""
    if history.size == 0:
        return [[] for _ in range(rows.size)]
    vectors, norms = model.items.item_vectors, model.items.norms
    cosine = (vectors[rows] @ vectors[history].T) / np.outer(norms[rows], norms[history])
    cosine[rows[:, None] == history[None, :]] = -np.inf
    ids = model.item_ids
    # A stable sort of every row at once: ties keep the history's (ascending) order.
    order = np.argsort(-cosine, axis=1, kind="stable")[:, :BECAUSE_MAX]
    best = np.take_along_axis(cosine, order, axis=1).tolist()
    rows_of = history[order].tolist()
    return [
        [ids.id_of(row) for row, value in zip(found, values, strict=True) if value > 0]
        for found, values in zip(rows_of, best, strict=True)
    ]


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


def reason_of(
    *, explored: bool, new: bool, popular: bool, history_positive: float, positive: float
) -> str:
    """The reason kind of an item (every path decides it here): an exploration slot, an
    item the model was not trained with, popularity for a user known for nothing, mostly
    the user's history (more than half of the positive parts), else the user's vector."""
    if explored:
        return "exploration"
    if new:
        return "new_item"
    if popular:
        return "popular"
    if positive > 0 and history_positive > positive / 2:
        return "because_history"
    return "personalized"


__all__ = [
    "BECAUSE_MAX",
    "DEFAULT_TOP",
    "REASONS",
    "Explanation",
    "explain_scores",
    "explain_similar",
    "reason_of",
    "summarise",
]
