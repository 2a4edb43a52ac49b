"""The shopper simulator against a real server that retrains on its own schedule, and the
server's report checked against an independent recount from the stored raw rows."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from shelfrank.client import Client
from shelfrank.core.events import EventType
from shelfrank.datasets.synth import SynthConfig, generate, truth
from shelfrank.server.app import ServerOptions, start
from shelfrank.server.cli.simulate import EXPERIMENT, experiment_file
from shelfrank.server.config import TrainConfig
from shelfrank.server.simulate import SimulationConfig, Simulator
from shelfrank.server.storage import Impression, ImpressionKind

WINDOW_MS = 24 * 3_600_000
KIND_FIELD = {
    EventType.VIEW: "clicks",
    EventType.ADD_TO_CART: "carts",
    EventType.PURCHASE: "purchases",
    EventType.DISMISS: "dismissals",
}


def recount(impressions: list[Impression], events: list) -> dict[str, dict[str, int]]:  # type: ignore[type-arg]
    """Per variant: impressions and attributed events, by the documented rule written out
    as plainly as possible (quadratic loops, no indexes)."""
    served = {i.recommendation_id: i for i in impressions if i.kind is ImpressionKind.SERVED}
    shown = {i.recommendation_id: i for i in impressions if i.kind is ImpressionKind.SHOWN}
    effective = {}
    for rid in set(served) | set(shown):
        base = served.get(rid) or shown[rid]
        items = shown[rid].item_ids if rid in shown else base.item_ids
        effective[rid] = (base, items)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for base, _ in effective.values():
        if base.experiment == EXPERIMENT:
            counts[base.variant]["impressions"] += 1
    for event in events:
        field = KIND_FIELD.get(event.event_type)
        if field is None:
            continue
        target = None
        if event.recommendation_id:
            found = effective.get(event.recommendation_id)
            if found is not None:
                base, items = found
                if (
                    (not base.user_id or base.user_id == event.user_id)
                    and event.item_id in items
                    and base.time_ms - 60_000 <= event.timestamp_ms <= base.time_ms + WINDOW_MS
                ):
                    target = base
        else:
            best = None
            for base, items in effective.values():
                if (
                    base.user_id == event.user_id
                    and event.item_id in items
                    and base.time_ms <= event.timestamp_ms <= base.time_ms + WINDOW_MS
                    and (best is None or base.time_ms > best.time_ms)
                ):
                    best = base
            target = best
        if target is not None and target.experiment == EXPERIMENT:
            counts[target.variant][field] += 1
    return {variant: dict(values) for variant, values in counts.items()}


def test_the_simulator_drives_retrains_and_the_report_equals_a_recount(tmp_path: Path) -> None:
    experiments = tmp_path / "experiments.toml"
    experiments.write_text(experiment_file(50))
    server = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            experiments=experiments,
            retrain_interval_seconds=0.5,
            first_model_events=1,
            first_model_users=1,
            train_config=TrainConfig(components=8, epochs=5, seed=1, num_threads=1),
        )
    )
    try:
        config = SimulationConfig(shoppers=80, items=120, history_events=400, rounds=3, seed=2)
        with Client(f"127.0.0.1:{server.port}") as client:
            result = Simulator(client, config).run(EXPERIMENT)
        store = server.service.store
        impressions = list(store.impressions_between(0, 2**62))
        events = list(store.events_between(0, 2**62))
    finally:
        server.stop()
    # every round served by a newer model than the one before: retrains in between
    versions = [r.model_version for r in result.rounds]
    assert len(set(versions)) == 3
    assert sum(r.variants[v].responses for r in result.rounds for v in r.variants) == 240
    assert result.report is not None
    (experiment,) = json.loads(result.report.json)["experiments"]
    reported = {
        v["name"]: {
            key: v[key]
            for key in ("impressions", "clicks", "carts", "purchases", "dismissals")
            if v[key]
        }
        for v in experiment["variants"]
    }
    assert reported == recount(impressions, events)
    assert sum(v["impressions"] for v in reported.values()) == 240
    assert {"hybrid", "popularity"} == set(reported)


def test_the_ground_truth_explains_the_generated_views() -> None:
    """The simulator's hidden tastes are the generator's: the items a shopper's truth
    ranks first get far more of their views than the globally most viewed ones."""
    config = SynthConfig(items=300, users=200, events=40_000, seed=3)
    data, hidden = generate(config), truth(config)
    assert hidden.item_ids == tuple(data.items.ids)
    assert hidden.user_ids == tuple(data.users.ids)
    preference = hidden.preference(np.arange(200))
    np.testing.assert_allclose(preference.sum(axis=1), 1.0)
    user_row = {u: r for r, u in enumerate(hidden.user_ids)}
    item_row = {i: r for r, i in enumerate(hidden.item_ids)}
    views = np.zeros((200, 300))
    kinds = np.asarray(data.interactions.event_types)
    for user, item, kind in zip(
        data.interactions.user_ids, data.interactions.item_ids, kinds, strict=True
    ):
        if kind == EventType.VIEW:
            views[user_row[user], item_row[item]] += 1
    share = views / np.maximum(views.sum(axis=1, keepdims=True), 1)
    by_truth = np.take_along_axis(share, np.argsort(-preference, axis=1)[:, :10], 1).sum(1)
    by_popularity = share[:, np.argsort(-views.sum(axis=0))[:10]].sum(1)
    assert by_truth.mean() > 1.8 * by_popularity.mean()
    assert np.corrcoef(preference.ravel(), share.ravel())[0, 1] > 0.5
