"""Batch recommendation from a saved model (what ``shelfrank recommend`` runs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shelfrank.core.blend import Mode
from shelfrank.core.errors import InvalidInputError
from shelfrank.core.serving import ServingModel


@dataclass(frozen=True)
class Recommendation:
    user_id: str
    items: tuple[tuple[str, float], ...]
    source: str  # trained | fold-in | features | popularity

    def to_json(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "items": [{"item_id": item, "score": round(score, 6)} for item, score in self.items],
        }


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
) -> Iterator[Recommendation]:
    """Top-k per user. Users unknown to the model are folded in from ``histories`` or
    composed from ``user_tokens``; with neither they get the popularity list. History
    items count as seen."""
    if k <= 0:
        raise InvalidInputError(f"k: must be positive, got {k}")
    candidates = None
    if candidate_item_ids is not None:
        candidates = model.item_rows(candidate_item_ids)
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
        exclude = None
        if exclude_seen:
            exclude = np.union1d(model.seen_rows(user_id), rows)
        top = model.rank(user, k, exclude=exclude, candidates=candidates, mode=mode)
        ids = model.item_ids
        yield Recommendation(
            user_id,
            tuple(
                (ids.id_of(int(r)), float(s)) for r, s in zip(top.indices, top.scores, strict=True)
            ),
            user.source,
        )
