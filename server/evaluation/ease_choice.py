"""EASE's lambda, chosen on the validation split the blend is fitted on (what the
evaluation's EASE baseline uses, in both the given and the temporal protocol)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType
from shelfrank.core.scoring import top_k
from shelfrank.datasets.records import Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.item_item import ease_weights
from shelfrank.server.training_data import TrainingData

EASE_L2 = (100.0, 200.0, 400.0)

IntArray = npt.NDArray[np.int64]


def relevant_rows(
    test: Interactions, data: TrainingData, relevant: Collection[EventType]
) -> dict[str, IntArray]:
    """Per shopper, the item rows of their relevant test events (items the training data
    knows)."""
    wanted = np.isin(test.event_types, [int(k) for k in relevant])
    out: dict[str, set[int]] = {}
    for index in np.flatnonzero(wanted).tolist():
        item = data.items.entities.get(test.item_ids[index])
        if item is not None:
            out.setdefault(test.user_ids[index], set()).add(item)
    return {u: np.array(sorted(v), np.int64) for u, v in out.items()}


def choose_ease_l2(
    train: Interactions, config: TrainConfig, relevant: Collection[EventType]
) -> float:
    """EASE's lambda with the best P@10 for items new to known shoppers on the same
    validation split the blend is fitted on (``config.validation_split``)."""
    from shelfrank.server.blend_fit import validation_split
    from shelfrank.server.training_data import build_training_data

    split = validation_split(
        train, config.validation_fraction, config.validation_split, config.seed or 0
    )
    if split is None:
        raise InvalidInputError("validation: no split to choose EASE's lambda on")
    early, late = split
    data = build_training_data(early, replace(config, half_life_days=None))
    truth = relevant_rows(late, data, relevant)
    x = sp.csr_matrix(data.weights, dtype=np.float64)
    scores_by: dict[float, float] = {}
    users = [(data.users.entities.get(u), rows) for u, rows in truth.items()]
    cases = [(row, rows) for row, rows in users if row is not None]
    for l2 in EASE_L2:
        weights = ease_weights(x, l2)
        hits = []
        for row, rows in cases:
            scores = np.asarray(x[row] @ weights).ravel()
            seen = data.seen.row(row)
            fresh = rows[~np.isin(rows, seen)]
            if fresh.size == 0:
                continue
            top = top_k(scores, 10, exclude=seen).indices
            hits.append(np.isin(top, fresh).sum() / 10)
        scores_by[l2] = float(np.mean(hits)) if hits else 0.0
    return max(EASE_L2, key=lambda value: (scores_by[value], -value))


__all__ = ["EASE_L2", "choose_ease_l2", "relevant_rows"]
