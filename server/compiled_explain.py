"""The numeric work of an explanation, compiled (server only).

:func:`shelfrank.core.explain.explain_scores` is exact, but in numpy it is some eighty
small calls for ten items, which cost more than the arithmetic. The server does it here
(``core.explain`` looks these up on the scoring table's kernel):

- ``explained_parts``: every part of the listed items' scores (the model's term split
  into the user's and the item's parts, trend, item-to-item votes, buy-again, segment),
  in the columns and order ``core.explain._numpy_parts`` builds them, and their summary,
  in one call. Used wherever the neighbour tables keep their transposes.
- Its steps, also called one by one where they do not (a table above
  ``core.blend.TRANSPOSE_MAX`` entries): ``add_history_votes``, each history item's
  item-to-item vote (bit-identical to numpy); ``member_votes``, the segment votes
  (bit-identical); ``token_credits``, each (item, feature token) pair's credit and each
  item's own; ``summary_columns``, each item's largest parts, the rest and the largest
  history parts, ties to the lower column as in numpy.

Dot products and sums run in order rather than by BLAS: values equal numpy's to ~1e-14.
``tests/test_compiled_explain.py`` compares each step with numpy, and
``tests/test_explain_blend.py`` the one call, for every kind of user and term.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from shelfrank.core.explain import BECAUSE_MAX

# Chosen columns and values, rests, strongest history columns and values (per item).
Summary = tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
]


def _add_history_votes(
    voters_indptr: npt.NDArray[np.int64],
    voters_indices: npt.NDArray[np.int64],
    voters_weights: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    history_rows: npt.NDArray[np.int64],
    history_columns: npt.NDArray[np.int64],
    strength: npt.NDArray[np.float32],
    weight: float,
    peak: float,
    out: npt.NDArray[np.float64],
) -> None:
    """``out[p, history_columns[h]] += weight * w * strength[h] / peak`` for every voter
    ``history_rows[h]`` of ``rows[p]`` with weight ``w``. The voters of every listed item
    are scanned; a voter is found in the history through a table over the catalogue (an
    item-to-item table is square: voters are item rows) where the scan is long next to
    the catalogue, else by merging (history rows and each item's voters are ascending,
    ``ItemNeighbours.voters``). The scan's branches are then predictable: merging a few
    history rows into long voter lists mispredicted about every other step."""
    size = history_rows.size
    if size == 0:
        return
    catalogue = voters_indptr.size - 1
    scanned = 0
    for position in range(rows.size):
        scanned += voters_indptr[rows[position] + 1] - voters_indptr[rows[position]]
    if catalogue <= 8 * scanned:
        history_at = np.full(catalogue, -1, np.int64)
        for at in range(size):
            history_at[history_rows[at]] = at
        for position in range(rows.size):
            row = rows[position]
            for entry in range(voters_indptr[row], voters_indptr[row + 1]):
                at = history_at[voters_indices[entry]]
                if at >= 0:
                    value = weight * np.float64(voters_weights[entry]) * np.float64(strength[at])
                    out[position, history_columns[at]] += value / peak
        return
    for position in range(rows.size):
        row = rows[position]
        at = 0
        for entry in range(voters_indptr[row], voters_indptr[row + 1]):
            voter = voters_indices[entry]
            while at < size and history_rows[at] < voter:
                at += 1
            if at == size:
                break
            if history_rows[at] == voter:
                value = weight * np.float64(voters_weights[entry]) * np.float64(strength[at])
                out[position, history_columns[at]] += value / peak


def _member_votes(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    member: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """Per row of ``rows``, its entries' weights summed where the index is a ``member``,
    in float64 and entry order (as numpy's bincount sums them: bit-identical)."""
    out = np.zeros(rows.size)
    for position in range(rows.size):
        row = rows[position]
        total = 0.0
        for entry in range(indptr[row], indptr[row + 1]):
            if member[indices[entry]]:
                total += np.float64(weights[entry])
        out[position] = total
    return out


def _item_credits(
    rest: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.int64],
    embeddings: npt.NDArray[np.float32],
    weight: float,
    vector: npt.NDArray[np.float64],
    half_factor: float,
    out: npt.NDArray[np.float64],
    first: int,
) -> float:
    """The item side of one item's model score: each of its tokens' credit
    ``half_factor * (weight e_t) · vector`` into ``out[first:]``, and the item's own credit
    (returned). ``rest`` holds the item's vector in float64 on entry and its own part,
    what the tokens leave of it, on return."""
    dims = vector.size
    for at in range(tokens.size):
        token = tokens[at]
        dot = 0.0
        for k in range(dims):
            part = weight * np.float64(embeddings[token, k])
            rest[k] -= part
            dot += part * vector[k]
        out[first + at] = half_factor * dot
    dot = 0.0
    for k in range(dims):
        dot += rest[k] * vector[k]
    return half_factor * dot


def _token_credits(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    embeddings: npt.NDArray[np.float32],
    unit: bool,
    unit_weight: float,
    identity_weight: float,
    item_vectors: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    vector: npt.NDArray[np.float64],
    half_factor: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    total = 0
    for position in range(rows.size):
        total += indptr[rows[position] + 1] - indptr[rows[position]]
    columns = np.empty(total, np.int64)
    credit = np.zeros((rows.size, total))
    own = np.empty(rows.size)
    dims = vector.size
    rest = np.empty(dims)
    entry = 0
    for position in range(rows.size):
        row = rows[position]
        start, end = indptr[row], indptr[row + 1]
        # An item without tokens has no token weight (nor a division by 0 to find one).
        weight = unit_weight if unit or end == start else 1.0 / (identity_weight + (end - start))
        for k in range(dims):
            rest[k] = np.float64(item_vectors[row, k])
        tokens = indices[start:end]
        columns[entry : entry + tokens.size] = tokens
        own[position] = _item_credits_kernel(
            rest, tokens, embeddings, weight, vector, half_factor, credit[position], entry
        )
        entry += tokens.size
    return columns, credit, own


def _summary_columns(
    values: npt.NDArray[np.float64], offset: int, count: int, supporters: int
) -> Summary:
    items, width = values.shape
    largest = np.empty((items, count), np.int64)
    chosen = np.empty((items, count))
    rests = np.empty(items)
    strongest = np.empty((items, supporters), np.int64)
    strongest_values = np.empty((items, supporters))
    for position in range(items):
        # Insertion into the kept columns, largest first: a later column must be strictly
        # larger to pass an earlier one (ties to the lower column).
        kept = 0
        for column in range(width):
            size = abs(values[position, column])
            if kept == count and (count == 0 or size <= abs(chosen[position, count - 1])):
                continue
            at = kept if kept < count else count - 1
            while at > 0 and size > abs(chosen[position, at - 1]):
                largest[position, at] = largest[position, at - 1]
                chosen[position, at] = chosen[position, at - 1]
                at -= 1
            largest[position, at] = column
            chosen[position, at] = values[position, column]
            if kept < count:
                kept += 1
        total = 0.0
        for column in range(width):
            total += values[position, column]
        for at in range(count):
            total -= chosen[position, at]
        rests[position] = total
        kept = 0
        for column in range(width - offset):
            value = values[position, offset + column]
            if kept == supporters and (
                supporters == 0 or value <= strongest_values[position, supporters - 1]
            ):
                continue
            at = kept if kept < supporters else supporters - 1
            while at > 0 and value > strongest_values[position, at - 1]:
                strongest[position, at] = strongest[position, at - 1]
                strongest_values[position, at] = strongest_values[position, at - 1]
                at -= 1
            strongest[position, at] = column
            strongest_values[position, at] = value
            if kept < supporters:
                kept += 1
    return largest, chosen, rests, strongest, strongest_values


def _history_terms(
    signals: Any, history: npt.NDArray[np.int64], offset: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32], float]:
    """Per history row: its column (``history`` holds them all, both ascending), its vote
    strength and buy-again value as ``core.explain._add_signal_parts`` computes them in
    float32 (``max(x, 0)``, a NaN kept), and the largest buy-again value (NaN if any is,
    as numpy's ``max``)."""
    history_rows = signals.history_rows
    size = history_rows.size
    columns = np.empty(size, np.int64)
    strength = np.empty(size, np.float32)
    repeat = np.empty(size, np.float32)
    repeat_peak = 0.0
    at = 0
    zero = np.float32(0.0)
    for index in range(size):
        while history[at] < history_rows[index]:
            at += 1
        columns[index] = offset + at
        given = signals.history_strength[index]
        strength[index] = zero if given <= 0 else given
        bought = signals.history_repeat[index]
        bought = zero if bought <= 0 else bought
        repeat[index] = bought * signals.repeat_rate[history_rows[index]]
        value = np.float64(repeat[index])
        # The largest as numpy's max finds it: a NaN wins (and then no part is shown).
        if value != value or value > repeat_peak:
            repeat_peak = value
    return columns, strength, repeat, repeat_peak


def _user_parts(model: Any, vector: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The named parts of the user's vector, a row each: given (``model.parts_given``), or
    its profile tokens' and, unless 0, its own (``core.explain._prior_parts``: the tokens'
    parts summed in order and taken from the vector, as numpy does)."""
    if model.parts_given:
        given: npt.NDArray[np.float64] = model.user_parts
        return given
    tokens = model.user_tokens
    dims = vector.size
    parts = np.empty((tokens.size + 1, dims))
    total = np.zeros(dims)
    for at in range(tokens.size):
        for k in range(dims):
            part = model.user_token_weight * np.float64(model.user_embeddings[tokens[at], k])
            parts[at, k] = part
            total[k] += part
    own = False
    for k in range(dims):
        parts[tokens.size, k] = vector[k] - total[k]
        own = own or parts[tokens.size, k] != 0
    return parts if own else parts[: tokens.size]


def _explained_parts(
    rows: npt.NDArray[np.int64],
    history: npt.NDArray[np.int64],
    model: Any,
    signals: Any,
    top: int,
) -> tuple[
    int,
    npt.NDArray[np.int64],
    int,
    Summary,
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.bool_],
]:
    """Every part of ``rows``' scores (the matrix ``core.explain._numpy_parts`` builds
    term by term, with its columns in the same order) and its summary, in one call.
    ``model``, ``signals``: ``core.explain.ModelTerms`` and ``SignalTerms``; a term of
    weight 0 has no column. Returns the token of each token column, where the history
    columns start, the summary (``summary_columns``), and per item the sum of its positive
    history parts, of all its positive parts, and whether any history part is not 0;
    first, how many named parts of the user's vector there are."""
    has_popularity, popularity = model.has_popularity, model.popularity
    has_model, factor = model.has_model, model.factor
    folded_columns, folded = model.folded_columns, model.folded
    item_vectors, item_biases, vector = model.item_vectors, model.item_biases, model.vector
    token_indptr, token_indices = model.token_indptr, model.token_indices
    token_embeddings = model.token_embeddings
    trend_weight, segment_weight = signals.trend_weight, signals.segment_weight
    items = rows.size
    dims = vector.size
    tokens = 0
    if has_model:
        for position in range(items):
            tokens += token_indptr[rows[position] + 1] - token_indptr[rows[position]]
    user_parts = _user_parts_kernel(model, vector) if has_model else model.user_parts
    user_count = user_parts.shape[0] if has_model else 0
    offset = (
        (1 if has_popularity else 0)
        + (user_count + tokens + 3 if has_model else 0)
        + (1 if trend_weight > 0 else 0)
        + (1 if segment_weight > 0 else 0)
    )
    values = np.zeros((items, offset + history.size))
    token_columns = np.empty(tokens, np.int64)
    column = 0
    if has_popularity:
        for position in range(items):
            values[position, 0] = np.float64(popularity[rows[position]])
        column = 1
    if has_model:
        half = 0.5 * factor
        item = np.empty(dims)
        rest = np.empty(dims)
        entry = 0
        for position in range(items):
            row = rows[position]
            for k in range(dims):
                item[k] = np.float64(item_vectors[row, k])
            for part in range(user_count):
                dot = 0.0
                for k in range(dims):
                    dot += item[k] * user_parts[part, k]
                values[position, column + part] = half * dot
            for fold in range(folded_columns.size):
                dot = 0.0
                for k in range(dims):
                    dot += item[k] * folded[fold, k]
                values[position, offset + folded_columns[fold]] += half * dot
            # The item side: each feature token's credit and the item's own.
            start, end = token_indptr[row], token_indptr[row + 1]
            weight = (
                model.unit_weight
                if model.unit or end == start
                else 1.0 / (model.identity_weight + (end - start))
            )
            for k in range(dims):
                rest[k] = item[k]
            item_tokens = token_indices[start:end]
            token_columns[entry : entry + item_tokens.size] = item_tokens
            own = _item_credits_kernel(
                rest,
                item_tokens,
                token_embeddings,
                weight,
                vector,
                half,
                values[position],
                column + user_count + entry,
            )
            entry += item_tokens.size
            fixed = column + user_count + tokens
            values[position, fixed] = own
            values[position, fixed + 1] = np.float64(item_biases[row]) * factor
            values[position, fixed + 2] = factor * model.user_bias
        column += user_count + tokens + 3
    if trend_weight > 0:
        for position in range(items):
            values[position, column] = trend_weight * np.float64(signals.trend_unit[rows[position]])
        column += 1
    if signals.vote_weight > 0 or signals.repeat_weight > 0:
        columns, strength, repeat, repeat_peak = _history_terms_kernel(signals, history, offset)
        if signals.vote_weight > 0:
            add_history_votes(
                signals.voters_indptr,
                signals.voters_indices,
                signals.voters_weights,
                rows,
                signals.history_rows,
                columns,
                strength,
                signals.vote_weight,
                signals.vote_peak,
                values,
            )
        if signals.repeat_weight > 0 and repeat_peak > 0:
            history_rows = signals.history_rows
            for at in range(history_rows.size):
                if repeat[at] > 0:
                    for position in range(items):
                        if rows[position] == history_rows[at]:
                            value = signals.repeat_weight * np.float64(repeat[at])
                            values[position, columns[at]] += value / repeat_peak
    if segment_weight > 0 and signals.segment_peak > 0:
        member = np.zeros(signals.segment_rows, np.bool_)
        for token in signals.history_tokens:
            if 0 <= token < signals.segment_rows:
                member[token] = True
        summed = member_votes(
            signals.segment_indptr,
            signals.segment_indices,
            signals.segment_weights,
            rows,
            member,
        )
        peak = np.float32(signals.segment_peak)
        for position in range(items):
            # float32 as numpy divides a float32 array by a Python float (NEP 50)
            unit_vote = np.float32(summed[position]) / peak
            values[position, column] = segment_weight * np.float64(unit_vote)
    history_positive = np.zeros(items)
    positive = np.zeros(items)
    any_history = np.zeros(items, np.bool_)
    for position in range(items):
        named = 0.0
        for at in range(offset):
            named += max(values[position, at], 0.0)
        supported = 0.0
        for at in range(offset, offset + history.size):
            supported += max(values[position, at], 0.0)
            if values[position, at] != 0:
                any_history[position] = True
        history_positive[position] = supported
        positive[position] = supported + named
    count = min(top, offset + history.size)
    supporters = min(BECAUSE_MAX, history.size)
    summary = _summary_kernel(values, offset, count, supporters)
    return user_count, token_columns, offset, summary, history_positive, positive, any_history


# No fastmath: the sums must round as written.
_jit = numba.njit(nogil=True, cache=True)
# What ``core.explain._add_votes`` looks up on the table's kernel.
add_history_votes: Any = _jit(_add_history_votes)
# What ``core.explain._segment_units`` looks up: the segment votes of the listed items.
member_votes: Any = _jit(_member_votes)
_credits_kernel: Any = _jit(_token_credits)
_summary_kernel: Any = _jit(_summary_columns)
_item_credits_kernel: Any = _jit(_item_credits)
_user_parts_kernel: Any = _jit(_user_parts)
_history_terms_kernel: Any = _jit(_history_terms)
# What ``core.explain.explain_scores`` looks up: every part and its summary, one call.
explained_parts: Any = _jit(_explained_parts)


def token_credits(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    embeddings: npt.NDArray[np.float32],
    unit_weight: float | None,
    identity_weight: float,
    item_vectors: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    vector: npt.NDArray[np.float64],
    half_factor: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """:func:`shelfrank.core.explain.token_credits`, compiled."""
    found: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]
    found = _credits_kernel(
        indptr,
        indices,
        embeddings,
        unit_weight is not None,
        1.0 if unit_weight is None else float(unit_weight),
        float(identity_weight),
        item_vectors,
        np.ascontiguousarray(rows, np.int64),
        np.ascontiguousarray(vector, np.float64),
        float(half_factor),
    )
    return found


def summary_columns(
    values: npt.NDArray[np.float64], offset: int, count: int, supporters: int
) -> Summary:
    """:func:`shelfrank.core.explain.summary_columns`, compiled."""
    found: Summary
    found = _summary_kernel(
        np.ascontiguousarray(values, np.float64), int(offset), int(count), int(supporters)
    )
    return found


__all__ = [
    "add_history_votes",
    "explained_parts",
    "member_votes",
    "summary_columns",
    "token_credits",
]
