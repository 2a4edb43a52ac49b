"""The feedback loop end to end through a real server on a loopback port: responses
recorded as impressions, feedback attributed, experiments assigning variants, reports,
erasure, and a bad experiment file refused at start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shelfrank.client import Client, Event, EventType, Strategy
from shelfrank.client.errors import NotFoundError
from shelfrank.core.experiments import assign, load_experiments
from shelfrank.server.app import RunningServer, ServerOptions, start
from shelfrank.server.storage import ImpressionKind
from tests.conftest import SERVER_CONFIG, run_cli

EXPERIMENTS = """
[[experiment]]
name = "home"
salt = "test-salt"
[[experiment.variant]]
name = "control"
share = 50
setting = "hybrid"
[[experiment.variant]]
name = "pop"
share = 50
setting = "popularity"
"""
USERS = [f"u{n}" for n in range(20)]


@pytest.fixture
def experiments_file(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS)
    return path


def serve_toy(model_dir: Path, tmp_path: Path, **options: Any) -> RunningServer:
    """A real server on a loopback port, serving the toy model over a new state."""
    return start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=model_dir,
            train_config=SERVER_CONFIG,
            **options,
        )
    )


@pytest.fixture
def server(toy_model_dir: Path, tmp_path: Path, experiments_file: Path) -> Iterator[RunningServer]:
    running = serve_toy(toy_model_dir, tmp_path, experiments=experiments_file)
    yield running
    running.stop()


def variant_json(report_json: str, experiment: str, variant: str) -> dict[str, object]:
    import json

    document = json.loads(report_json)
    (found,) = [e for e in document["experiments"] if e["name"] == experiment]
    (row,) = [v for v in found["variants"] if v["name"] == variant]
    assert isinstance(row, dict)
    return row


def test_responses_carry_the_variant_of_the_stable_hash(server: RunningServer) -> None:
    (experiment,) = load_experiments(server.service.feedback.experiment_file.path)  # type: ignore[union-attr]
    with Client(f"127.0.0.1:{server.port}") as client:
        for user in USERS:
            response = client.recommend(user, k=4)
            expected = assign(experiment, user)
            assert (response.experiment, response.variant) == ("home", expected.name)
            if expected.setting == "popularity":
                assert response.strategy is Strategy.POPULARITY
            else:
                assert response.strategy is Strategy.TRAINED


def test_feedback_with_and_without_an_id_is_attributed(server: RunningServer) -> None:
    with Client(f"127.0.0.1:{server.port}") as client:
        first = client.recommend("u0", k=4)
        second = client.recommend("u0", k=4)
        a, b = first.items[0].item_id, first.items[1].item_id
        client.track(
            [
                Event("u0", a, "view", recommendation_id=first.recommendation_id, position=1),
                Event("u0", a, "add_to_cart", recommendation_id=first.recommendation_id),
                # no id: the latest response to u0 showing b (second shows the same list)
                Event("u0", b, "purchase"),
                # an id nobody served: stored, not attributed, never an error
                Event("u0", a, "view", recommendation_id="never-served"),
            ]
        )
        report = client.report("home")
    row = variant_json(report.json, "home", first.variant)
    assert row["impressions"] == 2
    assert (row["clicks"], row["carts"], row["purchases"]) == (1, 1, 1)
    assert second.item_ids == first.item_ids  # so the purchase went to the latest: second
    import json

    assert json.loads(report.json)["unattributed"]["unknown_recommendation"] == 1
    (typed,) = report.experiments
    (typed_row,) = [v for v in typed.variants if v.name == first.variant]
    assert (typed_row.impressions, typed_row.clicks, typed_row.purchases) == (2, 1, 1)
    assert typed_row.ctr.low <= typed_row.ctr.value <= typed_row.ctr.high


def test_a_report_of_what_was_shown_narrows_the_list(server: RunningServer) -> None:
    with Client(f"127.0.0.1:{server.port}") as client:
        response = client.recommend("u1", k=4)
        shown = response.item_ids[:1]
        first = client.shown(response, shown, user_id="u1")
        again = client.shown(response, shown, user_id="u1")
        assert (first.accepted, first.duplicates) == (1, 0)
        assert (again.accepted, again.duplicates) == (0, 1)
        rid = response.recommendation_id
        client.track(
            [
                Event("u1", shown[0], "view", recommendation_id=rid),
                Event("u1", response.item_ids[2], "view", recommendation_id=rid),  # not shown
            ]
        )
        report = client.report("home")
    import json

    document = json.loads(report.json)
    assert document["unattributed"]["item_not_in_response"] == 1
    assert variant_json(report.json, "home", response.variant)["clicks"] == 1


def test_an_unknown_experiment_is_not_found(server: RunningServer) -> None:
    with Client(f"127.0.0.1:{server.port}") as client, pytest.raises(NotFoundError):
        client.report("no-such-experiment")


def test_without_recording_nothing_is_stored_and_reports_stay_empty(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    from shelfrank.client.errors import FailedPreconditionError

    running = serve_toy(toy_model_dir, tmp_path, record_impressions=False)
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            response = client.recommend("u0", k=3)
            with pytest.raises(FailedPreconditionError, match="records no impressions"):
                client.shown(response, user_id="u0")  # what was shown is not stored either
            assert list(running.service.store.impressions_between(0, 2**62)) == []
            report = client.report()
            assert report.experiments == ()
            import json

            assert json.loads(report.json)["traffic"]["surfaces"] == []
    finally:
        running.stop()


def test_an_erased_user_takes_impressions_and_feedback_along(server: RunningServer) -> None:
    store = server.service.store
    with Client(f"127.0.0.1:{server.port}") as client:
        kept = client.recommend("u3", k=3)
        gone = client.recommend("u2", k=3)
        client.track(
            [
                Event("u2", gone.item_ids[0], "view", recommendation_id=gone.recommendation_id),
                Event("u3", kept.item_ids[0], "view", recommendation_id=kept.recommendation_id),
            ]
        )
        server.service.feedback.flush()  # type: ignore[union-attr]
        before = {i.user_id for i in store.impressions_between(0, 2**62)}
        assert {"u2", "u3"} <= before
        client.delete_user("u2")
        after = list(store.impressions_between(0, 2**62))
        assert {i.user_id for i in after} == before - {"u2"}
        assert all(e.user_id != "u2" for e in store.events_between(0, 2**62))
        report = client.report("home")
    import json

    counted = sum(v["impressions"] for v in json.loads(report.json)["experiments"][0]["variants"])
    assert counted == 1  # u3's response only


def test_served_impressions_are_compact_and_complete(server: RunningServer) -> None:
    with Client(f"127.0.0.1:{server.port}") as client:
        response = client.recommend("u4", k=5)
        client.similar_items(response.item_ids[0], k=3)
        client.rank("u4", list(response.item_ids))
    server.service.feedback.flush()  # type: ignore[union-attr]
    rows = list(server.service.store.impressions_between(0, 2**62))
    assert [r.surface for r in rows] == ["recommend", "similar", "rank"]
    first = rows[0]
    assert first.kind is ImpressionKind.SERVED
    assert first.recommendation_id == response.recommendation_id
    assert first.item_ids == response.item_ids
    assert first.model_version == response.model_version
    assert (first.experiment, first.variant) == ("home", response.variant)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            EXPERIMENTS.replace(
                'share = 50\nsetting = "popularity"', 'share = 40\nsetting = "popularity"'
            ),
            "100",
        ),
        (EXPERIMENTS.replace('name = "pop"', 'name = "control"'), "control"),
        (EXPERIMENTS.replace('setting = "popularity"', 'setting = "magic"'), "magic"),
        (EXPERIMENTS + EXPERIMENTS.replace('salt = "test-salt"', 'salt = "other"'), "home"),
    ],
    ids=["shares", "duplicate-variant", "unknown-setting", "duplicate-experiment"],
)
def test_a_bad_experiment_file_is_refused_at_start_in_one_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_cli(
        "serve", "--state", str(tmp_path / "state"), "--port", "0", "--experiments", str(path)
    )
    assert result.returncode == 1
    message = result.stderr.strip()
    assert "\n" not in message, message
    assert problem in message
    assert "bad.toml" in message


def test_tracked_events_keep_their_recommendation_id(server: RunningServer) -> None:
    with Client(f"127.0.0.1:{server.port}") as client:
        response = client.recommend("u5", k=2)
        client.track(
            [
                Event(
                    "u5",
                    response.item_ids[1],
                    EventType.VIEW,
                    recommendation_id=response.recommendation_id,
                    position=2,
                )
            ]
        )
    (stored,) = [e for e in server.service.store.events_between(0, 2**62) if e.user_id == "u5"]
    assert (stored.recommendation_id, stored.position) == (response.recommendation_id, 2)


def test_impressions_sent_after_an_erasure_they_predate_are_dropped(server: RunningServer) -> None:
    from shelfrank.client import Impression

    store = server.service.store
    with Client(f"127.0.0.1:{server.port}") as client:
        response = client.recommend("u6", k=3)
        seen = store.latest_erasure("u6")
        client.delete_user("u6")
        late = Impression(response.recommendation_id, response.item_ids, user_id="u6")
        result = client.report_shown([late], erasure_seen=seen)
        assert (result.accepted, result.duplicates) == (0, 1)
        fresh = Impression("device-1", response.item_ids, user_id="u6")
        assert client.report_shown([fresh], erasure_seen=store.latest_erasure("u6")).accepted == 1
    assert [i.recommendation_id for i in store.impressions_between(0, 2**62)] == ["device-1"]


def test_the_experiment_file_is_reloaded_and_a_bad_change_keeps_the_loaded_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shelfrank.server.feedback import loop

    monkeypatch.setattr(loop, "RELOAD_CHECK_SECONDS", 0.0)
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS)
    watched = loop.ExperimentFile(path)
    assert [v.share for v in watched.experiments[0].variants] == [50, 50]
    path.write_text(
        EXPERIMENTS.replace("share = 50", "share = 25", 1).replace(
            'name = "pop"\nshare = 50', 'name = "pop"\nshare = 75'
        )
    )
    assert [v.share for v in watched.experiments[0].variants] == [25, 75]
    path.write_text(EXPERIMENTS.replace('setting = "popularity"', 'setting = "magic"'))
    assert [v.share for v in watched.experiments[0].variants] == [25, 75]  # kept


def test_an_experiment_reload_the_store_cannot_check_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shelfrank.core.errors import StorageError
    from shelfrank.server.feedback import loop

    monkeypatch.setattr(loop, "RELOAD_CHECK_SECONDS", 0.0)
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS)
    store_away = [False]

    def check(experiments: tuple[Any, ...]) -> None:  # as the server's pinned-version check
        if store_away[0]:
            raise StorageError("the store is away")

    watched = loop.ExperimentFile(path, check=check)
    store_away[0] = True
    path.write_text(EXPERIMENTS.replace('name = "pop"', 'name = "popular"'))
    names = [v.name for v in watched.experiments[0].variants]  # a request: no error
    assert names == ["control", "pop"]
    store_away[0] = False
    names = [v.name for v in watched.experiments[0].variants]  # the same file, tried again
    assert names == ["control", "popular"]


def test_prometheus_counts_served_responses_and_attributed_events_per_variant(
    toy_model_dir: Path, tmp_path: Path, experiments_file: Path
) -> None:
    import urllib.request

    running = serve_toy(toy_model_dir, tmp_path, experiments=experiments_file, metrics_port=0)
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            response = client.recommend("u7", k=3)
            rid = response.recommendation_id
            client.track(
                [
                    Event("u7", response.item_ids[0], "view", recommendation_id=rid),
                    Event("u7", response.item_ids[0], "purchase", recommendation_id=rid),
                    Event("u8", response.item_ids[0], "view", recommendation_id=rid),  # other
                    Event("u7", "shoe0-not-shown", "view", recommendation_id=rid),
                ]
            )
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        running.stop()
    variant = f'variant="{response.variant}"'  # the exposition sorts labels by name
    served = f'shelfrank_served_total{{experiment="home",surface="recommend",{variant}}} 1.0'
    assert served in text, text
    for kind in ("view", "purchase"):  # the other user's and the unshown item's: not counted
        line = f'shelfrank_attributed_events_total{{experiment="home",type="{kind}",{variant}}} 1.0'
        assert line in text, text


def test_a_variant_pinned_to_a_model_version_keeps_serving_it(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    import json

    from shelfrank.server.registry import ModelRegistry

    pinned = json.loads((toy_model_dir / "manifest.json").read_text())["model_version"]
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS.replace('setting = "popularity"', f'setting = "model:{pinned}"'))
    running = serve_toy(toy_model_dir, tmp_path, experiments=path)
    try:
        assert running.service.feedback is not None
        assert running.service.feedback.pinned_versions() == {pinned}
        store = running.service.store
        assert store.pinned_models() == {pinned}
        keep = running.retrainer.registry.keep
        with Client(f"127.0.0.1:{running.port}") as client:
            versions = []
            for round_number in range(keep + 2):  # more retrains than versions are kept
                client.track(
                    [Event(f"u{n}", f"shoe{(n + round_number) % 5}", "purchase") for n in range(10)]
                    + [Event(f"u{n}", f"book{n % 5}", "purchase") for n in range(10, 20)]
                )
                version = running.retrainer.retrain_now(full=True)
                assert version is not None
                versions.append(version)
            current = versions[-1]
            assert pinned not in versions
            assert not store.has_model(versions[0])  # pruned: the registry keeps `keep`
            assert store.has_model(pinned)  # pinned: spared
            (experiment,) = load_experiments(path)
            served = {}
            for user in USERS:
                response = client.recommend(user, k=3)
                served[assign(experiment, user).name] = response.model_version
                expected = pinned if assign(experiment, user).name == "pop" else current
                assert response.model_version == expected
                # the experiment is on the recommend surface: Rank serves the current one
                assert client.rank(user, ["shoe1", "book1"]).model_version == current
        assert served == {"control": current, "pop": pinned}
        # A dedicated trainer knows no experiment file: the pin is in the store for it.
        trainer = ModelRegistry(store, tmp_path / "trainer-cache", keep=1)
        trainer.activate(current)
        assert store.has_model(pinned)
    finally:
        running.stop()
    # Reporting with the same file needs no model loaded (the pins are not checked).
    result = run_cli("report", "--state", str(tmp_path / "state"), "--experiments", str(path))
    assert result.returncode == 0, result.stderr
    assert "experiment home" in result.stdout


def test_a_file_pinning_a_version_the_store_lacks_is_refused_at_start(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    from shelfrank.core.errors import InvalidInputError

    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS.replace('setting = "popularity"', 'setting = "model:nope"'))
    with pytest.raises(InvalidInputError, match="pins model 'nope', which the store does not"):
        serve_toy(toy_model_dir, tmp_path, experiments=path)


def test_an_experiment_on_similar_items_assigns_the_shopper_looking(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS.replace('name = "home"', 'name = "pdp"\nsurface = "similar"'))
    (experiment,) = load_experiments(path)
    running = serve_toy(toy_model_dir, tmp_path, experiments=path)
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            strategies = {}
            for user in USERS:
                response = client.similar_items("shoe1", k=3, user_id=user)
                assert response.experiment == "pdp"
                assert response.variant == assign(experiment, user).name
                strategies[response.variant] = response.strategy
            assert strategies == {"control": "item", "pop": "popularity"}
            anonymous = client.similar_items("shoe1", k=3)
            assert (anonymous.experiment, anonymous.variant) == ("", "")
            looked = client.similar_items("shoe1", k=3, user_id="u5")
            client.track([Event("u5", looked.item_ids[0], "view")])  # no id: the window rule
            running.service.feedback.flush()  # type: ignore[union-attr]
            stored = {
                i.recommendation_id: i.user_id
                for i in running.service.store.impressions_between(0, 2**62)
            }
            assert stored[looked.recommendation_id] == "u5"
            assert stored[anonymous.recommendation_id] == ""
            report = client.report("pdp")
        assert variant_json(report.json, "pdp", looked.variant)["clicks"] == 1
    finally:
        running.stop()
