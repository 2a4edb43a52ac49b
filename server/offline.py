"""Batch recommendation from a saved model (what ``shelfrank recommend`` runs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from shelfrank.core.blend import Mode
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.explain import Explanation, explain_scores
from shelfrank.core.filters import FeatureIndex
from shelfrank.core.ranking import PLAIN, Steering, candidate_mask, model_facts, rank
from shelfrank.core.scoring import IndexArray, TopK
from shelfrank.core.serving import ServingModel, UserVector


@dataclass(frozen=True)
class Recommendation:
    user_id: str
    items: tuple[tuple[str, float], ...]
    source: str  # trained | fold-in | features | popularity
    recommendation_id: str = ""
    explanations: tuple[Explanation, ...] = ()

    def to_json(self) -> dict[str, object]:
        items: list[dict[str, object]] = [
            {"item_id": item, "score": round(score, 6)} for item, score in self.items
        ]
        for entry, explained in zip(items, self.explanations, strict=False):
            entry["explanation"] = {
                "reason": explained.reason,
                "contributions": [
                    {"source": source, "value": round(value, 6)}
                    for source, value in explained.contributions
                ],
                "rest": round(explained.rest, 6),
                "because_item_ids": list(explained.because),
            }
        return {
            "user_id": self.user_id,
            "recommendation_id": self.recommendation_id,
            "items": items,
        }


@dataclass(frozen=True)
class OfflineRequest:
    """What every user's list is asked for (the server's Recommend options, offline)."""

    filters: tuple[tuple[str, ...], ...] = ()
    exclude_features: tuple[str, ...] = ()
    unavailable_item_ids: frozenset[str] = frozenset()
    steering: Steering = PLAIN
    # The list of user ``u`` gets the recommendation id ``prefix + u`` (exploration is
    # placed by it, as the server places it by the request's recommendation_id).
    recommendation_id_prefix: str = ""
    explain: bool = False


History = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def recommend_users(
    model: ServingModel,
    user_ids: Iterable[str],
    k: int,
    *,
    exclude_seen: bool = False,
    mode: Mode = "new",
    candidate_item_ids: Sequence[str] | None = None,
    histories: Mapping[str, History] | None = None,
    user_tokens: Mapping[str, Sequence[str]] | None = None,
    request: OfflineRequest | None = None,
) -> Iterator[Recommendation]:
    """Top-k per user, through the one ranking pipeline (core/ranking.py) as the server
    ranks. Users unknown to the model are folded in from ``histories`` or composed from
    ``user_tokens``; with neither they get the popularity list. History items count as
    seen."""
    if k <= 0:
        raise InvalidInputError(f"k: must be positive, got {k}")
    request = request or OfflineRequest()
    n = len(model.items)
    features = FeatureIndex(
        model.item_token_embeddings.vocabulary,
        model.item_tokens.indptr,
        model.item_tokens.indices,
        n,
    )
    available = None
    if request.unavailable_item_ids:
        available = np.ones(n, np.bool_)
        available[
            model.item_rows(sorted(request.unavailable_item_ids & set(model.item_ids.ids)))
        ] = False
    mask = candidate_mask(
        features,
        filters=request.filters,
        exclude_features=request.exclude_features,
        available=available,
    )
    if candidate_item_ids is not None:
        chosen = np.zeros(n, np.bool_)
        chosen[model.item_rows(candidate_item_ids)] = True
        mask = chosen if mask is None else mask & chosen
    count = n if mask is None else int(np.count_nonzero(mask))
    new_items = model.item_popularity <= 0  # a model directory: every row was trained
    histories = histories or {}
    user_tokens = user_tokens or {}
    for user_id in user_ids:
        rows, weights = histories.get(user_id, (np.empty(0, np.int64), np.empty(0, np.float32)))
        user = model.user_vector(
            user_id,
            tokens=tuple(user_tokens.get(user_id, ())),
            history_rows=rows,
            history_weights=weights,
        )
        exclude = np.empty(0, np.int64)
        if exclude_seen:
            exclude = np.union1d(model.seen_rows(user_id), rows).astype(np.int64)
        key = request.recommendation_id_prefix + user_id

        facts = model_facts(
            model, features, user, mode, candidates=mask, excluded=exclude, new=new_items
        )
        top, explores = rank(
            partial(_best_of, model, user, exclude, mask, mode),
            k,
            request.steering,
            facts,
            key,
            candidates=count,
        )
        ids = model.item_ids
        explained: tuple[Explanation, ...] = ()
        if request.explain:
            explained = tuple(
                explain_scores(
                    model,
                    user_id,
                    user,
                    top.indices,
                    top.scores,
                    mode=mode,
                    explored=explores.tolist(),
                )
            )
        yield Recommendation(
            user_id,
            tuple(
                (ids.id_of(int(r)), float(s)) for r, s in zip(top.indices, top.scores, strict=True)
            ),
            user.source,
            key,
            explained,
        )


def _best_of(
    model: ServingModel,
    user: UserVector,
    exclude: IndexArray,
    mask: npt.NDArray[np.bool_] | None,
    mode: Mode,
    size: int,
) -> TopK:
    """The ``size`` best candidates by the model's (blended) score, as the server asks."""
    return model.rank(user, size, exclude=exclude, allowed=mask, mode=mode)
