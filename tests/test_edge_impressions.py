"""The device's impressions: every list it returns is queued in the outbox, synced through
ReportShown exactly once (a resend after a lost acknowledgement is a duplicate on the
server), labelled with its experiment variant; events carry the recommendation id they
answer; and an outbox from before impressions is migrated in place."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shelfrank.client import (
    Client,
    Impression,
    InvalidInputError,
    ShownResult,
    Strategy,
    UnimplementedError,
)
from shelfrank.client import FeatureFilter as Filter
from shelfrank.core.errors import StorageError
from shelfrank.core.events import EventType
from shelfrank.core.experiments import Experiment, Variant, assign, load_experiments
from shelfrank.edge import EdgeRecommender
from shelfrank.edge import outbox as outbox_module
from shelfrank.edge.outbox import SCHEMA_VERSION, Outbox

NOW_MS = int(time.time() * 1000)  # the devices' clock: fixed, and now for the server
FAR = 2**62


def clock() -> float:
    return NOW_MS / 1000


def phone(path: Path, target: str | None = None, **kwargs: Any) -> EdgeRecommender:
    settings = {"timeout": 2.0, "max_attempts": 2, "clock": clock, **kwargs}
    return EdgeRecommender(path, "u0", target, **settings)


def experiment(
    *variants: Variant, surface: str = "recommend", name: str = "home", **times: int
) -> Experiment:
    return Experiment(
        name=name,
        salt="home",
        surface=surface,
        start_ms=times.get("start_ms"),
        end_ms=times.get("end_ms"),
        variants=variants,
        control=variants[0].name,
    )


# --- queued on the device ----------------------------------------------------------------


def test_every_returned_list_is_queued_as_an_impression(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    device = phone(tmp_path / "phone", snapshot=toy_model_dir)
    recs = device.recommend(k=4)
    ranked = device.rank(item_ids=["book1", "shoe2", "unknown-item"])
    assert device.pending_impressions() == 2

    queued = device._outbox.pending_impressions(10)
    assert queued == [
        Impression(
            recs.recommendation_id,
            recs.item_ids,
            user_id="u0",
            timestamp_ms=NOW_MS,
            surface="device",
            model_version=device.snapshot.model_version,
        ),
        Impression(
            ranked.recommendation_id,
            ranked.item_ids,
            user_id="u0",
            timestamp_ms=NOW_MS,
            surface="device",
            model_version=device.snapshot.model_version,
        ),
    ]
    assert ranked.item_ids[-1] == "unknown-item"  # shown too, in the order returned
    assert (recs.variant, recs.experiment) == ("", "")  # no experiment


def test_a_repeated_recommendation_id_and_an_empty_list_add_nothing(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    device = phone(tmp_path / "phone", snapshot=toy_model_dir)
    device.recommend(k=2, recommendation_id="page-1")
    device.recommend(k=3, recommendation_id="page-1")
    nothing = device.recommend(k=3, filters=[Filter(["category=none"])])
    assert nothing.items == ()
    (queued,) = device._outbox.pending_impressions(10)
    assert (queued.recommendation_id, len(queued.item_ids)) == ("page-1", 2)  # the first


def test_the_queue_of_impressions_is_bounded_oldest_first(
    toy_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "MAX_QUEUED_IMPRESSIONS", 5)
    device = phone(tmp_path / "phone", snapshot=toy_model_dir)
    keys = [device.recommend(k=1).recommendation_id for _ in range(8)]
    assert device.pending_impressions() == 5
    assert [i.recommendation_id for i in device._outbox.pending_impressions(10)] == keys[3:]


def test_forget_wipes_the_impressions(toy_model_dir: Path, tmp_path: Path) -> None:
    device = phone(tmp_path / "phone", snapshot=toy_model_dir)
    device.recommend(k=2)
    device.forget()
    assert device.pending_impressions() == 0


def test_track_records_the_recommendation_id_and_position(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    device = phone(tmp_path / "phone", snapshot=toy_model_dir)
    recs = device.recommend(k=3)
    device.track("view", recs.item_ids[1], recommendation_id=recs.recommendation_id, position=2)
    device.track("view", "book1")
    first, second = device._outbox.pending(10)
    assert (first.recommendation_id, first.position) == (recs.recommendation_id, 2)
    assert (second.recommendation_id, second.position) == ("", 0)
    for bad, field in [
        ({"recommendation_id": "r" * 129}, "recommendation_id"),
        ({"recommendation_id": "r\n"}, "recommendation_id"),
        ({"recommendation_id": 7}, "recommendation_id"),
        ({"position": -1}, "position"),
        ({"position": 2**31}, "position"),
        ({"position": "1"}, "position"),
    ]:
        with pytest.raises(InvalidInputError, match=f"^{field}:"):
            device.track("view", "book1", **bad)
    assert device.pending_events() == 2


# --- experiments on the device ---------------------------------------------------------------


def test_the_device_labels_with_the_servers_assignment(toy_model_dir: Path, tmp_path: Path) -> None:
    home = experiment(Variant("control", 50), Variant("treatment", 50))
    labels = {}
    for user in ("u0", "u4"):  # one in each variant (see assign)
        device = EdgeRecommender(
            tmp_path / user, user, snapshot=toy_model_dir, clock=clock, experiments=[home]
        )
        recs = device.recommend(k=2)
        (queued,) = device._outbox.pending_impressions(10)
        assert (queued.experiment, queued.variant) == (recs.experiment, recs.variant)
        labels[user] = recs.variant
        assert recs.variant == assign(home, user).name
    assert labels == {"u0": "control", "u4": "treatment"}


def test_only_an_active_experiment_on_the_surface_applies(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    later = experiment(Variant("only", 100), start_ms=NOW_MS + 1)
    device = phone(tmp_path / "later", snapshot=toy_model_dir, experiments=[later])
    assert device.recommend(k=2).experiment == ""
    on_rank = experiment(Variant("only", 100), surface="rank")
    device = phone(tmp_path / "rank", snapshot=toy_model_dir, experiments=[on_rank])
    assert device.recommend(k=2).experiment == ""
    ranked = device.rank(item_ids=["book1", "shoe1"])
    assert (ranked.experiment, ranked.variant) == ("home", "only")
    assert [i.variant for i in device._outbox.pending_impressions(10)] == ["", "only"]


def test_a_popularity_variant_ranks_by_popularity_without_the_session(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    popular = experiment(Variant("pop", 100, setting="popularity"))
    popular_rank = experiment(Variant("pop", 100, setting="popularity"), surface="rank", name="r")
    device = phone(tmp_path / "phone", snapshot=toy_model_dir, experiments=[popular, popular_rank])
    snapshot = device.snapshot
    recs = device.recommend(k=5)
    assert recs.strategy is Strategy.POPULARITY
    scores = [item.score for item in recs.items]
    rows = [snapshot.item_ids.get(i) for i in recs.item_ids]
    assert scores == pytest.approx([float(snapshot.popularity[r]) for r in rows])  # type: ignore[index]
    assert scores == sorted(scores, reverse=True)
    assert min(scores) >= float(np.sort(snapshot.popularity)[-5])
    for item in ("book3", "book4", "book5"):
        device.track("view", item)
    assert device.recommend(k=5).item_ids == recs.item_ids  # the session does not move it
    ranked = device.rank(item_ids=recs.item_ids[::-1])
    assert (ranked.item_ids, ranked.strategy) == (recs.item_ids, Strategy.POPULARITY)


def test_the_variants_options_apply_where_the_request_leaves_them_unset(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    capped = experiment(Variant("one-each", 100, max_per_feature={"category=": 1}))
    device = phone(tmp_path / "phone", snapshot=toy_model_dir, experiments=[capped])
    plain = phone(tmp_path / "plain", snapshot=toy_model_dir)

    def categories(item_ids: tuple[str, ...]) -> list[str]:
        return [item.rstrip("0123456789") for item in item_ids]

    assert sorted(categories(device.recommend(k=2).item_ids)) == ["book", "shoe"]
    assert categories(plain.recommend(k=2).item_ids) == ["shoe", "shoe"]  # u0 buys shoes
    overridden = device.recommend(k=2, max_per_feature={"category=": 5})
    assert overridden.item_ids == plain.recommend(k=2, max_per_feature={"category=": 5}).item_ids
    assert overridden.variant == "one-each"


def test_experiments_are_checked_at_construction(toy_model_dir: Path, tmp_path: Path) -> None:
    home = experiment(Variant("a", 100))
    overlapping = Experiment("other", "other", "recommend", None, None, (Variant("b", 100),), "b")
    for bad, message in [
        (home, "experiments: expected an iterable"),
        ("home", "experiments: expected an iterable"),
        ([home, "x"], r"experiments\[1\]: expected an Experiment"),
        ([home, overlapping], "overlaps"),
        ([experiment(Variant("v" * 300, 100))], r"experiments\[0\].variant"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            phone(tmp_path / "phone", snapshot=toy_model_dir, experiments=bad)


# --- the outbox schema -----------------------------------------------------------------------

# The outbox as version 0 of the library created it.
SCHEMA_0 = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    session_id TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | rejected
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, seq);
CREATE TABLE IF NOT EXISTS device_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def old_device_database(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_0)
        db.executemany(
            "INSERT INTO outbox (event_id, user_id, item_id, event_type, timestamp_ms, state)"
            " VALUES (?, 'u0', ?, ?, ?, ?)",
            [
                ("e-sent", "book1", int(EventType.VIEW), NOW_MS - 5, "sent"),
                ("e-pending", "shoe2", int(EventType.PURCHASE), NOW_MS - 1, "pending"),
            ],
        )
        db.execute("INSERT INTO device_state VALUES ('purged_erasure', 3)")
    db.close()


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as db:
        found = [str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")]
    db.close()
    return found


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.close()
    return version


def test_an_outbox_of_the_first_schema_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "phone" / "outbox.sqlite3"
    old_device_database(path)
    assert user_version(path) == 0

    outbox = Outbox(path)
    (pending,) = outbox.pending(10)
    assert (pending.event_id, pending.item_id, pending.event_type) == (
        "e-pending",
        "shoe2",
        EventType.PURCHASE,
    )
    assert (pending.recommendation_id, pending.position) == ("", 0)
    assert outbox.counts() == {"sent": 1, "pending": 1}
    assert outbox.purged_erasure() == 3
    assert outbox.consumed_items() == {"shoe2"}
    outbox.add_impression(Impression("r1", ["a", "b"], user_id="u0"))
    assert outbox.pending_impressions(5) == [Impression("r1", ["a", "b"], user_id="u0")]
    outbox.close()

    assert user_version(path) == SCHEMA_VERSION == 1
    assert columns(path, "outbox")[-2:] == ["recommendation_id", "position"]
    assert "item_ids" in columns(path, "impressions")
    Outbox(path).close()  # opening again changes nothing
    assert columns(path, "outbox").count("position") == 1


def test_a_device_opens_its_old_outbox_and_keeps_its_queue(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    old_device_database(tmp_path / "phone" / "outbox.sqlite3")
    device = phone(tmp_path / "phone", snapshot=toy_model_dir)
    assert device.pending_events() == 1
    assert "shoe2" not in device.recommend(k=10).item_ids  # the old purchase still counts
    assert device.pending_impressions() == 1


def test_an_outbox_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StorageError, match="newer than this library"):
        Outbox(path)


# --- synced through a real server -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(model_dir: Path, state: Path, experiments: Path | None = None) -> Iterator[Any]:
    # Imported here: the tests above need no server.
    from shelfrank.server.app import ServerOptions, start
    from tests.conftest import SERVER_CONFIG

    running = start(
        ServerOptions(
            state_dir=state,
            port=0,
            model_dir=model_dir,
            train_config=SERVER_CONFIG,
            grace_seconds=1.0,
            experiments=experiments,
        )
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def server(toy_model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    with running_server(toy_model_dir, tmp_path / "server") as running:
        yield running


def target_of(server: Any) -> str:
    return f"127.0.0.1:{server.port}"


def shown_on_server(server: Any) -> dict[str, Any]:
    """The server's shown impressions (the ones devices and callers report), by id."""
    from shelfrank.server.storage import ImpressionKind

    server.service.feedback.flush()
    return {
        i.recommendation_id: i
        for i in server.service.store.impressions_between(0, FAR)
        if i.kind is ImpressionKind.SHOWN
    }


def test_impressions_reach_the_server_once(server: Any, tmp_path: Path) -> None:
    device = phone(tmp_path / "phone", target_of(server))
    assert device.sync().full_snapshot
    lists = [device.recommend(k=3), device.recommend(k=2), device.rank(item_ids=["book1", "shoe1"])]

    result = device.sync()

    assert (result.impressions_pushed, result.impressions_rejected) == (3, 0)
    assert result.impressions_pending == device.pending_impressions() == 0
    assert result.error == ""
    stored = shown_on_server(server)
    assert set(stored) == {recs.recommendation_id for recs in lists}
    for recs in lists:
        found = stored[recs.recommendation_id]
        assert tuple(found.item_ids) == recs.item_ids
        assert (found.user_id, found.surface, found.time_ms) == ("u0", "device", NOW_MS)
        assert found.model_version == recs.model_version
    assert device.sync().impressions_pushed == 0


def test_a_lost_acknowledgement_resends_as_duplicates(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = phone(tmp_path / "phone", target_of(server))
    device.sync()
    keys = {device.recommend(k=2).recommendation_id for _ in range(3)}
    real_report_shown = Client.report_shown
    answers: list[ShownResult] = []

    def recording(self: Client, impressions: Any, **kwargs: Any) -> ShownResult:
        answer = real_report_shown(self, impressions, **kwargs)
        answers.append(answer)
        return answer

    def crash(self: Outbox, recommendation_ids: Any) -> None:
        raise KeyboardInterrupt("the app died before recording the acknowledgement")

    monkeypatch.setattr(Client, "report_shown", recording)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Outbox, "acknowledge_impressions", crash)
        with pytest.raises(KeyboardInterrupt):
            device.sync()
    assert device.pending_impressions() == 3  # the server has them; the device cannot know
    result = device.sync()

    assert answers == [ShownResult(accepted=3, duplicates=0), ShownResult(0, duplicates=3)]
    assert (result.impressions_pushed, result.impressions_pending) == (3, 0)
    assert set(shown_on_server(server)) == keys  # one impression each


def test_a_refused_impression_is_set_aside_and_the_others_go(server: Any, tmp_path: Path) -> None:
    device = phone(tmp_path / "phone", target_of(server))
    device.sync()
    good = device.recommend(k=2)
    device.rank(item_ids=["book1", "bad\x01id"])  # the server refuses control characters
    later = device.recommend(k=2)

    result = device.sync()

    assert (result.impressions_pushed, result.impressions_rejected) == (2, 1)
    assert result.impressions_pending == 0
    assert device._outbox.impression_counts() == {"rejected": 1}
    assert set(shown_on_server(server)) == {good.recommendation_id, later.recommendation_id}
    assert device.sync().impressions_rejected == 0  # never sent again


def test_a_server_without_report_shown_keeps_them_queued(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = phone(tmp_path / "phone", target_of(server))
    device.sync()
    device.recommend(k=2)
    device.track("view", "book1")

    def older_server(self: Client, impressions: Any, **kwargs: Any) -> ShownResult:
        raise UnimplementedError("Method not found!", "ReportShown", "UNIMPLEMENTED")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Client, "report_shown", older_server)
        result = device.sync()
    assert (result.offline, result.pushed, result.impressions_pending) == (False, 1, 1)
    assert "impressions stay queued" in result.error
    assert device.sync().impressions_pushed == 1


def test_offline_the_impressions_wait(toy_model_dir: Path, tmp_path: Path) -> None:
    device = phone(
        tmp_path / "phone", f"127.0.0.1:{free_port()}", snapshot=toy_model_dir, max_attempts=1
    )
    device.recommend(k=2)
    result = device.sync()
    assert result.offline
    assert result.impressions_pending == 1


def test_events_carry_their_recommendation_id_to_the_server(server: Any, tmp_path: Path) -> None:
    device = phone(tmp_path / "phone", target_of(server))
    device.sync()
    recs = device.recommend(k=3)
    device.track(
        "add_to_cart", recs.item_ids[2], recommendation_id=recs.recommendation_id, position=3
    )
    assert device.sync().pushed == 1
    ((_, stored),) = list(server.service.store.events_for_user("u0"))
    assert (stored.recommendation_id, stored.position) == (recs.recommendation_id, 3)


EXPERIMENTS_TOML = """
[[experiment]]
name = "home"
surface = "recommend"
[[experiment.variant]]
name = "control"
share = 50
[[experiment.variant]]
name = "treatment"
share = 50
diversity = 0.3
"""


def test_device_feedback_is_reported_under_the_devices_variant(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "experiments.toml"
    config.write_text(EXPERIMENTS_TOML, encoding="utf-8")
    experiments = load_experiments(config)  # the server's file
    with running_server(toy_model_dir, tmp_path / "server", config) as server:
        device = EdgeRecommender(
            tmp_path / "phone", "u0", target_of(server), timeout=2.0, experiments=experiments
        )
        device.sync()
        recs = device.recommend(k=3)
        with Client(target_of(server)) as client:
            assert recs.variant == client.recommend("u0", k=3).variant  # the same assignment
        device.track("view", recs.item_ids[0], recommendation_id=recs.recommendation_id, position=1)
        assert device.sync().impressions_pushed == 1
        with Client(target_of(server)) as client:
            (report,) = client.report("home").experiments
        variants = {variant.name: variant for variant in report.variants}
        # The server's own response to u0 above is an impression of the same variant too.
        assert variants[recs.variant].impressions == 2
        assert variants[recs.variant].clicks == 1
