"""Retraining works on the smallest stores a shop starts from: a catalogue of one item (the
item-to-item term then has no neighbour to give), a handful of shoppers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.app import ServerOptions, start
from shelfrank.server.item_item import item_neighbours
from tests.conftest import SERVER_CONFIG


@pytest.mark.parametrize("method", ["ease", "knn"])
@pytest.mark.parametrize("items", [1, 2, 3])
def test_item_neighbours_of_the_smallest_catalogues(method: str, items: int) -> None:
    found, _ = item_neighbours(
        sp.csr_matrix(np.ones((3, items))), method=method, l2=10.0, shrink=0.0, top_n=50
    )
    assert found.rows == items
    assert not np.any(found.indices == np.repeat(np.arange(items), np.diff(found.indptr)))


@pytest.mark.parametrize(
    "events",
    [
        [("a", "x", EventType.PURCHASE), ("b", "x", EventType.VIEW), ("c", "x", EventType.VIEW)],
        [("a", "x", EventType.PURCHASE), ("b", "y", EventType.VIEW)],
    ],
    ids=["three shoppers, one item", "two shoppers, two items"],
)
def test_a_tiny_store_trains_a_model(
    tmp_path: Path, events: list[tuple[str, str, EventType]]
) -> None:
    running = start(ServerOptions(state_dir=tmp_path / "state", port=0, train_config=SERVER_CONFIG))
    try:
        running.service.store.append_events(
            [
                StoredEvent(f"e{n}", user, item, kind, 1_000 + n)
                for n, (user, item, kind) in enumerate(events)
            ]
        )
        assert running.retrainer is not None
        version = running.retrainer.retrain_now(force=True)
        assert version is not None
        assert running.service.state.model_version == version
    finally:
        running.stop()
