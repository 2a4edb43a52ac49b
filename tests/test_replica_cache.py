"""A replica that only follows the store's model pointer keeps a bounded cache of model
copies on its machine, as the publishing process does."""

from __future__ import annotations

from pathlib import Path

import pytest

from shelfrank.core.events import EventType, StoredEvent
from shelfrank.server.app import ServerOptions, start
from tests.conftest import SERVER_CONFIG


def _copies(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_a_following_replica_prunes_its_local_model_copies(
    toy_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "replica-machine"))
    trainer = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
            follow_seconds=3600,
        )
    )
    replica = start(
        ServerOptions(
            store=str(tmp_path / "state" / "events.sqlite3"),
            port=0,
            role="server",
            train_config=SERVER_CONFIG,
            follow_seconds=3600,
        )
    )
    try:
        assert trainer.retrainer is not None
        assert replica.follower is not None
        for n in range(7):
            trainer.service.store.append_events(
                [StoredEvent(f"e{n}", f"new{n}", "book1", EventType.PURCHASE, 1_000 + n)]
            )
            trainer.retrainer.retrain_now(full=True)
            replica.follower.check_now()
            assert replica.service.state.model_version == trainer.service.state.model_version
        replica_copies = _copies(tmp_path / "replica-machine" / "shelfrank" / "models")
        trainer_copies = _copies(tmp_path / "state" / "models")
        assert len(replica_copies) == len(trainer_copies) <= 4
        assert replica.service.state.model_version in replica_copies
    finally:
        replica.stop()
        trainer.stop()
