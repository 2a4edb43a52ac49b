"""A restart with the same ``--model`` keeps serving what was retrained since, however many
versions ago it was imported (the store keeps only the last few); a model trained after the
one serving is imported."""

from __future__ import annotations

import time
from pathlib import Path

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.app import ServerOptions, start
from shelfrank.server.hybrid import HybridModel
from tests.conftest import SERVER_CONFIG


def _options(tmp_path: Path, model: Path) -> ServerOptions:
    return ServerOptions(
        state_dir=tmp_path / "state", port=0, model_dir=model, train_config=SERVER_CONFIG
    )


def test_a_restart_with_the_same_model_does_not_roll_back_to_it(
    toy_model_dir: Path,
    tmp_path: Path,
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable],
) -> None:
    running = start(_options(tmp_path, toy_model_dir))
    try:
        imported = running.service.state.model_version
        assert running.retrainer is not None
        time.sleep(1.1)  # version names carry their training time to the second
        for n in range(5):  # more than the store keeps: the imported version is pruned
            running.service.store.append_events(
                [StoredEvent(f"e{n}", f"new{n}", "book1", EventType.PURCHASE, 1_000 + n)]
            )
            assert running.retrainer.retrain_now(full=True) is not None
        latest = running.service.state.model_version
        assert latest != imported
        assert not running.service.store.has_model(imported)
    finally:
        running.stop()
    again = start(_options(tmp_path, toy_model_dir))  # the same command line
    try:
        assert again.service.state.model_version == latest
    finally:
        again.stop()
    # A model trained after the one serving is what a new --model means: imported.
    interactions, items, users = toy_shop
    time.sleep(1.1)
    newer = HybridModel.train(interactions, SERVER_CONFIG, items=items, users=users)
    newer.save(tmp_path / "newer")
    third = start(_options(tmp_path, tmp_path / "newer"))
    try:
        assert third.service.state.model_version not in (latest, imported)
    finally:
        third.stop()
