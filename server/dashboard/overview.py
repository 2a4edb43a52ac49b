"""The overview: what serves, who trains, how much is stored, how each replica fares.

Cheap on purpose (the page loads it first, and every few seconds): the store's counts,
the serving state in memory, the trainer lease and an hour of load samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shelfrank.server.dashboard import shapes
from shelfrank.server.service import RecommenderService
from shelfrank.server.trainer_lease import LEASE_NAME

HOUR_MS = 3600 * 1000


def overview(
    service: RecommenderService, *, replica: str, role: str, now_ms: int
) -> dict[str, Any]:
    store = service.store
    state = service.current_state(store.catalogue_revision())
    counts = store.counts()
    items = len(state.model.item_ids)
    available = items if state.available is None else int(np.count_nonzero(state.available))
    # The store keeps no publication time: a model is published when trained (or
    # imported), so its training time stands for it.
    published_ms = state.trained_at_ms if state.trained and state.trained_at_ms > 0 else None
    return {
        "model": {
            "version": state.model_version if state.trained else None,
            "published_ms": published_ms,
            "age_s": None if published_ms is None else (now_ms - published_ms) / 1000.0,
            "trained": state.trained,
            "strategy": "model" if state.trained else "popularity",
        },
        "trainer": {"holder": store.lease_holder(LEASE_NAME), "role": role},
        "counts": {
            "users": counts.users_with_events,
            "items": items,
            "events": counts.events,
            "available_items": available,
        },
        "replicas": shapes.replicas(store.replica_samples(now_ms - HOUR_MS)),
        "this_replica": replica,
    }
