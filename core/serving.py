"""The serving model: everything needed to recommend, in numpy, without LightFM.

How a user is represented, in order of preference:

1. ``trained``: the user was in the training data; their exported vector and bias
   (optionally refined by fold-in of events newer than the model).
2. ``fold-in``: unknown to the model but with a history; the vector is folded in
   against the fixed item vectors, starting from the features-based vector.
3. ``features``: unknown, no history, but with metadata tokens; the vector composed from
   the user token embeddings.
4. ``popularity``: nothing known; items ranked by training popularity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from shelfrank.core.blend import (
    MF_ONLY,
    BlendWeights,
    Mode,
    RankingSignals,
    UserHistory,
    blended_scores_at,
    blended_top_k,
)
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.foldin import FoldInConfig, FoldInPool, fold_in_pool, fold_in_user
from shelfrank.core.ids import IdMap
from shelfrank.core.representation import TokenEmbeddings
from shelfrank.core.scoring import IndexArray, ScoringTable, TopK, top_k

FloatArray = npt.NDArray[np.float32]
UserSource = Literal["trained", "fold-in", "features", "popularity"]


@dataclass(frozen=True)
class UserVector:
    vector: FloatArray | None
    bias: float
    source: UserSource
    # What the user did (training history plus fresh events), for the blend's sparse terms.
    history: UserHistory = field(default_factory=UserHistory.empty)
    # What the vector was made from, for explanations (core/explain.py): the vector before
    # fold-in, the events folded in, the profile token rows and the trained history rows.
    prior: FloatArray | None = None
    folded_rows: IndexArray = field(default_factory=lambda: np.empty(0, np.int64))
    folded_weights: FloatArray = field(default_factory=lambda: np.empty(0, np.float32))
    tokens: IndexArray = field(default_factory=lambda: np.empty(0, np.int64))
    seen: IndexArray = field(default_factory=lambda: np.empty(0, np.int64))


def _first_unsorted_row(rows: SparseRows) -> int | None:
    """The first row whose indices are not strictly ascending (None: every row's are)."""
    indices = rows.indices
    if indices.size < 2:
        return None
    out_of_order = np.diff(indices) <= 0
    # A pair across a row boundary is two rows' entries, not one's.
    boundaries = rows.indptr[1:-1]
    boundaries = boundaries[(boundaries > 0) & (boundaries < indices.size)]
    out_of_order[boundaries - 1] = False
    found = np.flatnonzero(out_of_order)
    if not found.size:
        return None
    return int(np.searchsorted(rows.indptr, found[0] + 1, side="right") - 1)


@dataclass(frozen=True)
class SparseRows:
    """Compressed rows of integer indices (CSR without values)."""

    indptr: IndexArray
    indices: IndexArray

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or self.indices.ndim != 1 or self.indptr.size == 0:
            raise InvalidInputError("SparseRows needs 1-d indptr (non-empty) and indices")
        if (
            self.indptr[0] != 0
            or self.indptr[-1] != self.indices.size
            or np.any(np.diff(self.indptr) < 0)
        ):
            raise InvalidInputError("SparseRows indptr is not a valid monotonic offset array")

    @classmethod
    def empty(cls, rows: int) -> SparseRows:
        return cls(np.zeros(rows + 1, np.int64), np.empty(0, np.int64))

    @property
    def n_rows(self) -> int:
        return int(self.indptr.size - 1)

    def row(self, index: int) -> IndexArray:
        return self.indices[self.indptr[index] : self.indptr[index + 1]]


@dataclass
class ServingModel:
    items: ScoringTable
    item_tokens: SparseRows
    item_token_embeddings: TokenEmbeddings
    user_ids: IdMap
    user_vectors: FloatArray
    user_biases: FloatArray
    user_token_embeddings: TokenEmbeddings
    item_popularity: FloatArray
    seen: SparseRows
    fold_in: FoldInConfig = field(default_factory=FoldInConfig)
    model_version: str = ""
    # Blended ranking (core/blend.py): None ranks by the model's score alone. The two
    # strengths run parallel to ``seen.indices``.
    signals: RankingSignals | None = None
    seen_strength: FloatArray | None = None
    seen_repeat: FloatArray | None = None
    # Per trained user, their profile tokens (rows of user_token_embeddings.vocabulary).
    user_token_rows: SparseRows | None = None
    # Prepared on first fold-in; a model with other items (dataclasses.replace) starts anew.
    _fold_in_pool: FoldInPool | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n_users, n_items = len(self.user_ids), len(self.items)
        if self.user_vectors.shape != (n_users, self.items.dim):
            raise InvalidInputError(
                f"user_vectors has shape {self.user_vectors.shape}, "
                f"expected ({n_users}, {self.items.dim})"
            )
        if self.user_biases.shape != (n_users,):
            raise InvalidInputError(
                f"user_biases has shape {self.user_biases.shape}, expected {n_users}"
            )
        if self.item_popularity.shape != (n_items,):
            raise InvalidInputError("item_popularity must have one value per item")
        if self.item_tokens.n_rows != n_items:
            raise InvalidInputError("item_tokens must have one row per item")
        if self.seen.n_rows != n_users:
            raise InvalidInputError("seen must have one row per user")
        for name, rows, bound in (
            ("item_tokens", self.item_tokens, len(self.item_token_embeddings.vocabulary)),
            ("seen", self.seen, n_items),
        ):
            if rows.indices.size and (rows.indices.min() < 0 or rows.indices.max() >= bound):
                raise InvalidInputError(f"{name} refers to rows outside [0, {bound})")
        if self.signals is not None:
            if self.signals.items != n_items:
                raise InvalidInputError(
                    f"signals cover {self.signals.items} items, model has {n_items}"
                )
            if self.user_token_rows is not None and self.user_token_rows.n_rows != n_users:
                raise InvalidInputError("user_token_rows must have one row per user")
            for name, values in (
                ("seen_strength", self.seen_strength),
                ("seen_repeat", self.seen_repeat),
            ):
                if values is None or values.shape != self.seen.indices.shape:
                    raise InvalidInputError(f"{name} must have one value per seen item")
                if not np.all(np.isfinite(values)):
                    raise InvalidInputError(f"{name} must be finite")
            unsorted = _first_unsorted_row(self.seen)
            if unsorted is not None:
                # The blend and its explanations merge a user's history with other
                # ascending lists (core/blend.py UserHistory): unsorted, parts would land
                # in the wrong columns.
                raise InvalidInputError(
                    f"seen: user row {unsorted} lists its items out of order or twice "
                    "(each user's item rows must be ascending and distinct)"
                )
        for name, emb in (
            ("item", self.item_token_embeddings),
            ("user", self.user_token_embeddings),
        ):
            if emb.dim != self.items.dim:
                raise InvalidInputError(
                    f"{name} token embeddings have dim {emb.dim}, expected {self.items.dim}"
                )

    @property
    def item_ids(self) -> IdMap:
        return self.items.item_ids

    def user_vector(
        self,
        user_id: str,
        *,
        tokens: Sequence[str] = (),
        history_rows: IndexArray | None = None,
        history_weights: npt.NDArray[np.floating] | None = None,
        use_trained: bool = True,
    ) -> UserVector:
        """Representation of a user, from the best information available.

        ``use_trained=False`` ignores a trained vector (e.g. for a user erased since the
        model was trained)."""
        row = self.user_ids.get(user_id) if use_trained else None
        prior: FloatArray | None
        source: UserSource
        if row is not None:
            prior, bias, source = self.user_vectors[row], float(self.user_biases[row]), "trained"
        elif tokens and self.user_token_embeddings.known_tokens(tokens):
            prior, bias = self.user_token_embeddings.compose(tokens)
            source = "features"
        else:
            prior, bias, source = None, 0.0, "popularity"
        history = self._history(row, history_rows, history_weights, tokens)
        token_rows = np.array(self.user_token_embeddings.known_tokens(tokens), np.int64)
        if token_rows.size == 0 and row is not None and self.user_token_rows is not None:
            token_rows = self.user_token_rows.row(row).astype(np.int64)
        seen = self.seen.row(row) if row is not None else np.empty(0, np.int64)
        if history_rows is None or history_rows.size == 0:
            return UserVector(prior, bias, source, history, prior, tokens=token_rows, seen=seen)
        if history_weights is None:
            raise InvalidInputError("history_weights: required when history_rows are given")
        pool = self._fold_in_pool
        if pool is None:  # racing requests may both build it: same result, no harm
            pool = self._fold_in_pool = fold_in_pool(
                self.items.item_vectors, self.items.item_biases, self.fold_in
            )
        vector = fold_in_user(
            self.items.item_vectors,
            self.items.item_biases,
            history_rows,
            history_weights,
            prior,
            self.fold_in,
            pool,
        )
        return UserVector(
            vector,
            bias,
            "trained" if row is not None else "fold-in",
            history,
            prior,
            np.asarray(history_rows, np.int64),
            np.asarray(history_weights, np.float32),
            token_rows,
            seen,
        )

    def _history(
        self,
        row: int | None,
        fresh_rows: IndexArray | None,
        fresh_weights: npt.NDArray[np.floating] | None,
        tokens: Sequence[str] = (),
    ) -> UserHistory:
        """Training history (when the user was trained) plus the positive fresh events,
        and the profile tokens (given ones, else the trained user's)."""
        if self.signals is None:
            return UserHistory.empty()
        token_rows = np.array(self.user_token_embeddings.known_tokens(tokens), np.int64)
        if token_rows.size == 0 and row is not None and self.user_token_rows is not None:
            token_rows = self.user_token_rows.row(row).astype(np.int64)
        history = UserHistory.empty()
        if row is not None and self.seen_strength is not None and self.seen_repeat is not None:
            start, end = int(self.seen.indptr[row]), int(self.seen.indptr[row + 1])
            history = UserHistory(
                self.seen.indices[start:end].astype(np.int64),
                self.seen_strength[start:end],
                self.seen_repeat[start:end],
            )
        if fresh_rows is not None and fresh_rows.size and fresh_weights is not None:
            weights = np.asarray(fresh_weights, np.float32)
            positive = weights > 0
            history = history.merged(fresh_rows[positive], weights[positive], weights[positive])
        return history.with_tokens(token_rows)

    def seen_rows(self, user_id: str) -> IndexArray:
        """Items the user interacted with in the training data."""
        row = self.user_ids.get(user_id)
        return self.seen.row(row) if row is not None else np.empty(0, np.int64)

    def rank(
        self,
        user: UserVector,
        k: int,
        *,
        exclude: IndexArray | None = None,
        candidates: IndexArray | None = None,
        allowed: npt.NDArray[np.bool_] | None = None,
        mode: Mode = "new",
    ) -> TopK:
        """Top-k item rows for a resolved user (restricted as in ``ScoringTable.recommend``).

        With ranking signals the blend of ``user.source`` and ``mode`` ranks (``repeat``
        when the caller lets the shopper buy again, ``new`` when seen items are excluded)."""
        signals = self.signals
        weights = self._blend_weights(user, mode)
        if signals is not None and weights != MF_ONLY:
            if candidates is not None:
                allowed = np.zeros(len(self.items), np.bool_)
                allowed[candidates] = True
            return blended_top_k(
                self.items,
                signals,
                user.vector,
                user.bias,
                user.history,
                weights,
                k,
                exclude=exclude,
                allowed=allowed,
            )
        if user.vector is None:
            if allowed is not None:
                candidates = np.flatnonzero(allowed)
            return top_k(self.item_popularity, k, exclude=exclude, candidates=candidates)
        return self.items.recommend(
            user.vector, user.bias, k, exclude=exclude, candidates=candidates, allowed=allowed
        )

    def _blend_weights(self, user: UserVector, mode: Mode) -> BlendWeights:
        if self.signals is None:
            return MF_ONLY
        segment = user.source
        if segment == "trained" and user.history.rows.size == 0:
            segment = "features"  # a profile without any event: served from features
        return self.signals.blend.get(segment, mode)

    def scores_of(self, user: UserVector, rows: IndexArray, mode: Mode = "repeat") -> FloatArray:
        """The scores ``rank`` orders by, for the given item rows (the blend of the user's
        segment and ``mode`` when the model has one)."""
        signals = self.signals
        weights = self._blend_weights(user, mode)
        if signals is not None and weights != MF_ONLY:
            return blended_scores_at(
                self.items, signals, user.vector, user.bias, user.history, weights, rows
            )
        if user.vector is None:
            return self.item_popularity[rows]
        return self.items.scores(user.vector, user.bias, rows=rows)

    def item_rows(self, item_ids: Sequence[str]) -> IndexArray:
        return np.array(self.items.item_ids.indices(item_ids), dtype=np.int64)
