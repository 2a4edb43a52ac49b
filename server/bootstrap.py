"""Serving before the first model: popularity over what the store holds.

A server started on an empty state directory has no model. It serves a state built from
the store alone: every catalogue item and every item seen in an event, ranked by the
weighted count of its events (the training event weights; dismissals count nothing).
The counts come from the store and are brought up to date by adding the events after
the seq they were counted to, so every process reading the same store agrees. Once the
store holds enough events from enough users (:class:`FirstModelPolicy`) the first model
is trained and replaces this state (``server/retrainer.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import EventType
from shelfrank.core.ids import IdMap
from shelfrank.core.representation import TokenEmbeddings
from shelfrank.core.scoring import ScoringTable
from shelfrank.core.serving import ServingModel, SparseRows
from shelfrank.server.config import TrainConfig
from shelfrank.server.serving_state import ServingState
from shelfrank.server.storage import EventStore, StoreCounts

# The vectors of a state without a model are never used for ranking; one column keeps
# every table well formed.
_DIM = 1
# Counts of the events made again when an erasure commits during one (see
# read_state_without_model).
_COUNT_ATTEMPTS = 3


@dataclass(frozen=True)
class FirstModelPolicy:
    """When a server without a model trains its first one: once the store holds at least
    ``events`` events from at least ``users`` users."""

    events: int = 1_000
    users: int = 50

    def __post_init__(self) -> None:
        for name in ("events", "users"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"first model {name}: must be at least 1")

    def ready(self, counts: StoreCounts) -> bool:
        return counts.events >= self.events and counts.users_with_events >= self.users


def _empty_tokens(vocabulary: IdMap) -> TokenEmbeddings:
    size = len(vocabulary)
    vectors, biases = np.zeros((size, _DIM), np.float32), np.zeros(size, np.float32)
    return TokenEmbeddings(vocabulary, vectors, biases, identity_weight=1)


def _popularity(
    item_ids: IdMap,
    counts: Iterable[tuple[str, EventType, int]],
    weights: Mapping[EventType, float],
) -> npt.NDArray[np.float32]:
    popularity = np.zeros(len(item_ids), np.float64)
    for item, kind, count in counts:
        if kind is not EventType.DISMISS:
            popularity[item_ids.index(item)] += weights[kind] * count
    return popularity.astype(np.float32)


def state_without_model(
    catalogue: Sequence[tuple[Any, ...]],
    counts: Sequence[tuple[str, EventType, int]],
    counted_to_seq: int,
    config: TrainConfig,
) -> ServingState:
    """The state a server serves before its first model: catalogue items and items seen
    in ``counts`` (events per item and type, through ``counted_to_seq``)."""
    vocabulary = IdMap()
    item_ids = IdMap()
    token_rows: list[list[int]] = []
    for entry in catalogue:  # (item, tokens) or a CatalogueEntry
        item_ids.add(entry[0])
        token_rows.append(sorted({vocabulary.add(token) for token in entry[1]}))
    for item, _, _ in counts:
        if item not in item_ids:
            item_ids.add(item)
            token_rows.append([])
    n = len(item_ids)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum([len(row) for row in token_rows], out=indptr[1:])
    model = ServingModel(
        items=ScoringTable(item_ids, np.zeros((n, _DIM), np.float32), np.zeros(n, np.float32)),
        item_tokens=SparseRows(indptr, np.array([c for r in token_rows for c in r], np.int64)),
        item_token_embeddings=_empty_tokens(vocabulary),
        user_ids=IdMap(),
        user_vectors=np.zeros((0, _DIM), np.float32),
        user_biases=np.zeros(0, np.float32),
        user_token_embeddings=_empty_tokens(IdMap()),
        item_popularity=_popularity(item_ids, counts, config.event_weights),
        seen=SparseRows.empty(0),
    )
    state = ServingState.build(model, config, trained_at_ms=0, watermark_seq=counted_to_seq)
    # Availability and when items were added (tokens are in place: nothing else changes).
    return replace(state, trained=False).with_catalogue(catalogue)


def read_state_without_model(store: EventStore, config: TrainConfig) -> ServingState:
    # Erasures before and after counting: the table's name carries ``erasures_through``, so
    # counts must reflect exactly the erasures through it, or two processes could give one
    # name to two tables. One committed during the count: count again (a few times; past
    # that the store is already beyond ``erasures_through`` and the next read counts afresh).
    for _ in range(_COUNT_ATTEMPTS):
        erasures = store.last_erasure()
        counted_to, counts = store.item_event_counts()
        if store.last_erasure() == erasures:
            break
    revision, catalogue = store.catalogue_changes()
    state = state_without_model(catalogue, counts, counted_to, config)
    return replace(state, erasures_through=erasures, catalogue_through=revision)


def with_new_events(state: ServingState, store: EventStore) -> ServingState:
    """``state`` (without a model) with the events stored since it was counted: their
    items added, their counts added to the popularity. The same state when none are new."""
    counted_to, counts = store.item_event_counts(after_seq=state.watermark_seq)
    if counted_to == state.watermark_seq:
        return state
    unknown = {item: () for item, _, _ in counts if item not in state.model.item_ids}
    grown = state.with_items(unknown) if unknown else state
    model = grown.model
    added = _popularity(model.item_ids, counts, state.config.event_weights)
    model = replace(model, item_popularity=model.item_popularity + added)
    return replace(grown, model=model, watermark_seq=counted_to)


__all__ = [
    "FirstModelPolicy",
    "read_state_without_model",
    "state_without_model",
    "with_new_events",
]
