"""Train/test splits for offline evaluation. All random choices are seeded."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shelfrank.core.errors import InvalidInputError
from shelfrank.datasets.records import Interactions


@dataclass(frozen=True)
class EvaluationSplit:
    protocol: str
    train: Interactions
    test: Interactions
    # When set, each user's ranking is restricted to these items (cold-start protocol).
    candidate_item_ids: tuple[str, ...] | None = None
    notes: dict[str, float | int | str] = field(default_factory=dict)


def _pair_codes(interactions: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer codes for users, items and (user, item) pairs, in first-seen order."""
    users = {u: i for i, u in enumerate(dict.fromkeys(interactions.user_ids))}
    items = {v: i for i, v in enumerate(dict.fromkeys(interactions.item_ids))}
    user_codes = np.fromiter((users[u] for u in interactions.user_ids), np.int64, len(interactions))
    item_codes = np.fromiter((items[v] for v in interactions.item_ids), np.int64, len(interactions))
    return user_codes, item_codes, user_codes * max(1, len(items)) + item_codes


def given_split(train: Interactions, test: Interactions) -> EvaluationSplit:
    return EvaluationSplit("given", train, test)


def random_split(
    interactions: Interactions, test_fraction: float = 0.2, seed: int = 0
) -> EvaluationSplit:
    """Per user, a seeded ``test_fraction`` of their (user, item) pairs goes to test.

    Splitting pairs rather than events keeps repeated events of one pair on one side.
    Users with a single pair stay entirely in training.
    """
    if not 0 < test_fraction < 1:
        raise InvalidInputError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    user_codes, _, pair_codes = _pair_codes(interactions)
    pairs, pair_index = np.unique(pair_codes, return_inverse=True)
    pair_users = np.zeros(pairs.size, dtype=np.int64)
    pair_users[pair_index] = user_codes
    rng = np.random.default_rng(seed)
    draw = rng.random(pairs.size)
    in_test = np.zeros(pairs.size, dtype=bool)
    order = np.lexsort((draw, pair_users))
    sorted_users = pair_users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], order.size]
    for start, end in zip(starts, ends, strict=True):
        count = end - start
        n_test = round(count * test_fraction) if count > 1 else 0
        in_test[order[start : start + n_test]] = True
    mask = in_test[pair_index]
    return EvaluationSplit(
        "random",
        interactions.take(~mask),
        interactions.take(mask),
        notes={"test_fraction": test_fraction, "seed": seed},
    )


def temporal_split(interactions: Interactions, test_fraction: float = 0.2) -> EvaluationSplit:
    """Everything after the ``1 - test_fraction`` quantile of timestamps is test."""
    if not 0 < test_fraction < 1:
        raise InvalidInputError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    stamps = interactions.timestamps
    if len(interactions) == 0 or np.isnan(stamps).any():
        raise InvalidInputError("timestamp: the temporal split needs a timestamp on every event")
    cutoff = float(np.quantile(stamps, 1 - test_fraction))
    mask = stamps > cutoff
    return EvaluationSplit(
        "temporal",
        interactions.take(~mask),
        interactions.take(mask),
        notes={"cutoff_unix_seconds": cutoff},
    )


def cold_items_split(
    interactions: Interactions, item_fraction: float = 0.2, seed: int = 0
) -> EvaluationSplit:
    """A seeded ``item_fraction`` of items loses all its interactions to the test set;
    rankings are then made among those held-out items only, from their features."""
    if not 0 < item_fraction < 1:
        raise InvalidInputError(f"item_fraction: must be in (0, 1), got {item_fraction}")
    items = sorted(set(interactions.item_ids), key=lambda v: (len(v), v))
    rng = np.random.default_rng(seed)
    held = {
        item
        for item, draw in zip(items, rng.random(len(items)), strict=True)
        if draw < item_fraction
    }
    mask = np.fromiter((v in held for v in interactions.item_ids), bool, len(interactions))
    return EvaluationSplit(
        "cold-items",
        interactions.take(~mask),
        interactions.take(mask),
        candidate_item_ids=tuple(v for v in items if v in held),
        notes={"item_fraction": item_fraction, "seed": seed, "held_out_items": len(held)},
    )
