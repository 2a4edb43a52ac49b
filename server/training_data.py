"""From imported events and metadata to LightFM's matrices.

Several events for the same (user, item) pair become one training interaction whose
weight is the strongest positive signal among them (an explicit ``weight`` column
overrides the event type's weight). A dismissal is never positive: it cancels weak
evidence (anything below an add-to-cart) for that pair, and the item still counts as seen.

Time-aware signals for blended ranking (``shelfrank.core.blend``) weigh each event by
``0.5 ** (age / half_life)``, its age measured from the newest event (``half_life_days``
for trend and repeat, ``item_half_life_days`` for item-to-item votes; None: no decay):

- per (user, item): ``strength``, the strongest decayed weight (the item-to-item vote),
  and ``repeat``, the summed decayed weight of its purchases (of every positive event when
  the data has no purchase at all): how often and how recently the shopper bought it;
- per user profile token: ``segment_trend``, the ``SEGMENT_TOP`` items with the highest
  summed decayed weight among the shoppers who have the token (what is trending in a
  country, an age band, ...);
- per item: ``trend``, the summed decayed weight of its events (recent popularity), and
  ``repeat_rate``, the share of its buyers who bought it again, shrunk towards the
  catalogue's share by ``REPEAT_PRIOR`` pseudo-buyers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shelfrank.core.blend import ItemNeighbours
from shelfrank.core.events import EventType
from shelfrank.core.serving import SparseRows
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.feature_space import FeatureSpace
from shelfrank.server.item_item import top_per_row


@dataclass
class TrainingData:
    users: FeatureSpace
    items: FeatureSpace
    weights: sp.coo_matrix  # users x items, strongest positive signal per pair
    seen: SparseRows  # every item each user had any event with
    popularity: npt.NDArray[np.float32]  # summed pair weights per item
    # Time-aware signals (server/training_data.py docstring): per seen pair, parallel to
    # ``seen.indices``; per item; and the time they are measured at (unix seconds, NaN when
    # the events carry no time).
    seen_strength: npt.NDArray[np.float32] | None = None
    segment_trend: ItemNeighbours | None = None
    seen_repeat: npt.NDArray[np.float32] | None = None
    trend: npt.NDArray[np.float32] | None = None
    repeat_rate: npt.NDArray[np.float32] | None = None
    reference_time: float = float("nan")
    # How events group into pairs (kept so the time signals can be recomputed for another
    # half-life without regrouping, see :func:`retimed`); not saved.
    layout: PairLayout | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.users.entities), len(self.items.entities)


def event_weights(interactions: Interactions, config: TrainConfig) -> npt.NDArray[np.float32]:
    """Per-event weight: explicit weight, else the event type's; 0 for dismissals."""
    table = np.zeros(max(EventType) + 1, dtype=np.float32)
    for kind, weight in config.event_weights.items():
        table[int(kind)] = 0.0 if kind is EventType.DISMISS else weight
    weights = table[interactions.event_types.astype(np.int64)]
    explicit = ~np.isnan(interactions.weights) & (
        interactions.event_types != int(EventType.DISMISS)
    )
    weights[explicit] = interactions.weights[explicit]
    return weights


@dataclass(frozen=True)
class PairLayout:
    order: npt.NDArray[np.int64]  # events sorted by (user, item)
    starts: npt.NDArray[np.int64]  # first sorted event of each pair
    pair_users: npt.NDArray[np.int64]
    pair_items: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]  # per event, unsorted
    strongest: npt.NDArray[np.floating]  # per pair, after dismissals


REPEAT_PRIOR = 5.0
SEGMENT_TOP = 200
DAY_SECONDS = 86_400.0


def decay_factors(
    timestamps: npt.NDArray[np.float64], reference: float, half_life_days: float | None
) -> npt.NDArray[np.float64]:
    """``0.5 ** (age / half_life)`` per event; 1 without a half-life or a timestamp."""
    if half_life_days is None or not np.isfinite(reference):
        return np.ones(timestamps.shape[0])
    age = np.nan_to_num(np.maximum(reference - timestamps, 0.0), nan=0.0)
    return np.asarray(0.5 ** (age / (half_life_days * DAY_SECONDS)))


def build_training_data(
    interactions: Interactions,
    config: TrainConfig,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    *,
    previous: TrainingData | None = None,
) -> TrainingData:
    """Matrices for LightFM. With ``previous`` its feature spaces are extended (copies),
    so every existing entity and feature keeps its index: what incremental training of
    an existing model needs."""
    if previous is not None:
        user_space, item_space = previous.users.copy(), previous.items.copy()
    else:
        user_space = FeatureSpace(config.identity_weight, use_tokens=config.use_user_features)
        item_space = FeatureSpace(config.identity_weight, use_tokens=config.use_item_features)
    # Catalogue entities first (in file order), then ids only seen in events.
    for table, space in ((users, user_space), (items, item_space)):
        if table is not None:
            for entity, tokens in zip(table.ids, table.tokens, strict=True):
                space.add(entity, tokens)
    user_rows = user_space.add_many(interactions.user_ids)
    item_rows = item_space.add_many(interactions.item_ids)
    n_users, n_items = len(user_space.entities), len(item_space.entities)

    weights = event_weights(interactions, config)
    keys = user_rows * n_items + item_rows
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = (
        np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        if keys.size
        else (np.empty(0, np.int64))
    )
    pair_keys = sorted_keys[starts]
    strongest = np.maximum.reduceat(weights[order], starts) if keys.size else np.empty(0)
    is_dismiss = (interactions.event_types[order] == int(EventType.DISMISS)).astype(np.int8)
    dismissed = (
        np.maximum.reduceat(is_dismiss, starts).astype(bool) if keys.size else (np.empty(0, bool))
    )
    strong_floor = config.event_weights[EventType.ADD_TO_CART]
    strongest = np.where(dismissed & (strongest < strong_floor), 0.0, strongest)

    pair_users = pair_keys // n_items if n_items else pair_keys
    pair_items = pair_keys % n_items if n_items else pair_keys
    positive = strongest > 0
    matrix = sp.coo_matrix(
        (strongest[positive].astype(np.float32), (pair_users[positive], pair_items[positive])),
        shape=(n_users, n_items),
    )
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair_users, minlength=n_users), out=indptr[1:])
    seen = SparseRows(indptr, pair_items.astype(np.int64))  # keys are sorted by user, item
    popularity = np.bincount(
        pair_items[positive], weights=strongest[positive], minlength=n_items
    ).astype(np.float32)
    data = TrainingData(user_space, item_space, matrix, seen, popularity)
    if keys.size:
        data.layout = PairLayout(order, starts, pair_users, pair_items, weights, strongest)
        _add_time_signals(data, interactions, config, data.layout)
    else:
        data.seen_strength = np.empty(0, np.float32)
        data.seen_repeat = np.empty(0, np.float32)
        data.trend = np.zeros(n_items, np.float32)
        data.repeat_rate = np.zeros(n_items, np.float32)
    return data


def retimed(data: TrainingData, interactions: Interactions, config: TrainConfig) -> TrainingData:
    """``data`` (built from ``interactions``) with its time signals recomputed for the
    half-lives of ``config``: what trying another half-life needs, without regrouping."""
    if data.layout is None:
        return build_training_data(interactions, config, previous=data)
    out = replace(data)
    _add_time_signals(out, interactions, config, data.layout)
    return out


def _add_time_signals(
    data: TrainingData, interactions: Interactions, config: TrainConfig, layout: PairLayout
) -> None:
    order, starts, weights, strongest = (
        layout.order,
        layout.starts,
        layout.weights,
        layout.strongest,
    )
    pair_users, pair_items = layout.pair_users, layout.pair_items
    n_items = len(data.items.entities)
    stamps = interactions.timestamps
    reference = float(np.nanmax(stamps)) if np.isfinite(stamps).any() else float("nan")
    decay = decay_factors(stamps, reference, config.half_life_days)
    decayed = (weights * decay)[order]
    item_decay = decay_factors(stamps, reference, config.item_half_life_days)
    strength = np.maximum.reduceat((weights * item_decay)[order], starts)
    data.seen_strength = np.where(strongest > 0, strength, 0.0).astype(np.float32)
    kinds = interactions.event_types[order]
    purchases = kinds == int(EventType.PURCHASE)
    bought = purchases if purchases.any() else decayed > 0
    data.seen_repeat = np.add.reduceat(np.where(bought, decayed, 0.0), starts).astype(np.float32)
    item_of_event = np.repeat(pair_items, np.diff(np.r_[starts, order.size]))
    data.trend = np.bincount(item_of_event, weights=decayed, minlength=n_items).astype(np.float32)
    times_bought = np.add.reduceat(bought.astype(np.int64), starts)
    buyers = np.bincount(pair_items, weights=times_bought >= 1, minlength=n_items)
    again = np.bincount(pair_items, weights=times_bought >= 2, minlength=n_items)
    overall = float(again.sum() / buyers.sum()) if buyers.sum() else 0.0
    data.repeat_rate = ((again + REPEAT_PRIOR * overall) / (buyers + REPEAT_PRIOR)).astype(
        np.float32
    )
    data.reference_time = reference
    pair_trend = np.add.reduceat(decayed, starts)
    data.segment_trend = _segment_trend(data, pair_users, pair_items, pair_trend)


def _segment_trend(
    data: TrainingData,
    pair_users: npt.NDArray[np.int64],
    pair_items: npt.NDArray[np.int64],
    pair_trend: npt.NDArray[np.floating],
) -> ItemNeighbours:
    n_users, n_items = data.shape
    token_indptr, token_indices = data.users.token_rows()
    vocabulary, _ = data.users.token_vocabulary()
    membership = sp.csr_matrix(
        (np.ones(token_indices.size), token_indices, token_indptr),
        shape=(n_users, len(vocabulary)),
    )
    recent = sp.csr_matrix((pair_trend, (pair_users, pair_items)), shape=(n_users, n_items))
    by_token = sp.csr_matrix(membership.T @ recent)
    by_token.eliminate_zeros()
    return top_per_row(by_token, SEGMENT_TOP)
