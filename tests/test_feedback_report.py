"""The feedback report: grouping, rates, comparisons, JSON shape, table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shelfrank.core.errors import UnknownIdError
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.core.experiments import Experiment, Variant
from shelfrank.server.feedback.report import build_report
from shelfrank.server.feedback.stats import (
    Checkpoint,
    difference_interval,
    sequential_test,
    wilson_interval,
)
from shelfrank.server.storage import Impression, ImpressionKind

DAY = 86_400_000
T0 = 1_796_083_200_000  # 2026-12-01T00:00:00Z
VIEW, CART, BUY, DISMISS = (
    EventType.VIEW,
    EventType.ADD_TO_CART,
    EventType.PURCHASE,
    EventType.DISMISS,
)
HOME = Experiment(
    name="home",
    salt="home",
    surface="recommend",
    start_ms=T0,
    end_ms=None,
    variants=(Variant("control", 50, "hybrid"), Variant("pop", 50, "popularity")),
    control="control",
)
VARIANT_KEYS = [
    "name",
    "impressions",
    "clicks",
    "carts",
    "purchases",
    "dismissals",
    "ctr",
    "ctr_ci",
    "add_to_cart_rate",
    "add_to_cart_rate_ci",
    "conversion",
    "conversion_ci",
    "dismissal_rate",
    "dismissal_rate_ci",
    "by_model_version",
    "by_day",
]


def shown(
    rid: str,
    user: str,
    time_ms: int,
    *,
    experiment: str = "home",
    variant: str = "control",
    model_version: str = "v1",
    surface: str = "recommend",
    items: tuple[str, ...] = ("a", "b", "c"),
) -> Impression:
    return Impression(
        recommendation_id=rid,
        kind=ImpressionKind.SERVED,
        user_id=user,
        time_ms=time_ms,
        surface=surface,
        experiment=experiment,
        variant=variant,
        model_version=model_version,
        item_ids=items,
    )


def did(
    event_id: str, user: str, item: str, kind: EventType, time_ms: int, rid: str = ""
) -> StoredEvent:
    return StoredEvent(event_id, user, item, kind, time_ms, recommendation_id=rid)


def small() -> tuple[list[Impression], list[StoredEvent]]:
    """home: control 4 responses (2 on day 1 with v1, 2 on day 2 with v2), pop 3; plus 2
    responses outside experiments (recommend, similar)."""
    impressions = [
        shown("c1", "u1", T0 + 1000),
        shown("c2", "u2", T0 + 2000),
        shown("c3", "u3", T0 + DAY + 1000, model_version="v2"),
        shown("c4", "u4", T0 + DAY + 2000, model_version="v2"),
        shown("p1", "u5", T0 + 1000, variant="pop"),
        shown("p2", "u6", T0 + DAY + 1000, variant="pop"),
        shown("p3", "u7", T0 + DAY + 2000, variant="pop"),
        shown("t1", "u8", T0 + 5000, experiment="", variant=""),
        shown("t2", "", T0 + 6000, experiment="", variant="", surface="similar"),
    ]
    events = [
        did("e1", "u1", "a", VIEW, T0 + 2000, "c1"),
        did("e2", "u1", "b", VIEW, T0 + 3000, "c1"),  # a second click on c1
        did("e3", "u1", "b", CART, T0 + 4000, "c1"),
        did("e4", "u1", "b", BUY, T0 + 5000, "c1"),
        did("e5", "u3", "a", DISMISS, T0 + DAY + 2000, "c3"),
        did("e6", "u5", "c", VIEW, T0 + 2000),  # window rule: p1
        did("e7", "u6", "a", VIEW, T0 + DAY + 2000, "p2"),
        did("e8", "u7", "a", VIEW, T0 + DAY + 3000, "p3"),
        did("e9", "u7", "a", BUY, T0 + DAY + 4000, "p3"),
        did("e10", "u8", "a", VIEW, T0 + 6000, "t1"),
        did("e11", "u9", "a", VIEW, T0 + 7000, "nope"),
        did("e12", "u9", "z", VIEW, T0 + 7000),
    ]
    return impressions, events


def test_variants_and_breakdowns() -> None:
    impressions, events = small()
    report = build_report(impressions, events, [HOME], now_ms=T0 + 2 * DAY)
    document = report.to_json()
    (home,) = document["experiments"]
    assert home["name"] == "home"
    control, pop = home["variants"]
    assert list(control) == VARIANT_KEYS
    assert control["name"] == "control"
    assert (
        control["impressions"],
        control["clicks"],
        control["carts"],
        control["purchases"],
        control["dismissals"],
    ) == (4, 2, 1, 1, 1)
    assert control["ctr"] == pytest.approx(1 / 4)  # responses with a click, not clicks
    assert control["ctr_ci"] == pytest.approx(list(wilson_interval(1, 4)))
    assert control["add_to_cart_rate"] == pytest.approx(1 / 4)
    assert control["conversion"] == pytest.approx(1 / 4)
    assert control["dismissal_rate"] == pytest.approx(1 / 4)
    assert (pop["impressions"], pop["clicks"], pop["purchases"]) == (3, 3, 1)
    assert pop["ctr"] == pytest.approx(1.0)
    assert pop["ctr_ci"][1] == 1.0
    by_version = {row["model_version"]: row for row in control["by_model_version"]}
    assert (by_version["v1"]["impressions"], by_version["v1"]["clicks"]) == (2, 2)
    assert (by_version["v2"]["impressions"], by_version["v2"]["dismissals"]) == (2, 1)
    assert [row["day"] for row in control["by_day"]] == ["2026-12-01", "2026-12-02"]
    assert [row["ctr"] for row in pop["by_day"]] == [1.0, 1.0]
    assert set(control["by_day"][0]) == {"day", *VARIANT_KEYS[1:14]}
    traffic = document["traffic"]
    assert traffic["name"] == "all traffic"
    surfaces = {row["surface"]: row for row in traffic["surfaces"]}
    assert (surfaces["recommend"]["impressions"], surfaces["recommend"]["clicks"]) == (1, 1)
    assert (surfaces["similar"]["impressions"], surfaces["similar"]["clicks"]) == (1, 0)
    assert document["unattributed"] == {
        "unknown_recommendation": 1,
        "other_user": 0,
        "item_not_in_response": 0,
        "expired": 0,
        "no_impression": 1,
    }
    assert document["window_ms"] == DAY
    assert document["generated_ms"] == T0 + 2 * DAY
    json.dumps(document, allow_nan=False)


def test_comparisons() -> None:
    impressions, events = small()
    report = build_report(impressions, events, [HOME], now_ms=T0 + 2 * DAY)
    comparisons = report.to_json()["experiments"][0]["comparisons"]
    assert [(c["variant"], c["control"], c["metric"]) for c in comparisons] == [
        ("pop", "control", "ctr"),
        ("pop", "control", "conversion"),
    ]
    ctr = comparisons[0]
    assert list(ctr) == [
        "variant",
        "control",
        "metric",
        "difference",
        "ci",
        "always_valid_ci",
        "p_value",
        "verdict",
    ]
    assert ctr["difference"] == pytest.approx(1.0 - 0.25)
    assert ctr["ci"] == pytest.approx(list(difference_interval(1, 4, 3, 3)))
    # daily cumulative checkpoints: day 1 control 1/2, pop 1/1; day 2 control 1/4, pop 3/3
    expected = sequential_test([Checkpoint(1, 2, 1, 1), Checkpoint(1, 4, 3, 3)])
    assert ctr["always_valid_ci"] == pytest.approx(list(expected.confidence_sequence))
    assert ctr["p_value"] == pytest.approx(expected.p_value)
    assert ctr["verdict"] == expected.verdict
    assert comparisons[1]["difference"] == pytest.approx(1 / 3 - 1 / 4)


def test_a_clear_winner_is_ahead() -> None:
    rng = np.random.default_rng(5)
    impressions, events = [], []
    for day in range(14):
        for n in range(400):
            variant = "pop" if n % 2 else "control"
            rid = f"r{day}-{n}"
            user = f"u{day}-{n}"
            time_ms = T0 + day * DAY + n * 1000
            impressions.append(shown(rid, user, time_ms, variant=variant))
            if rng.random() < (0.15 if variant == "pop" else 0.05):
                events.append(did(f"e{rid}", user, "a", VIEW, time_ms + 500, rid))
    report = build_report(impressions, events, [HOME], now_ms=T0 + 14 * DAY)
    ctr = report.experiment("home").comparisons[0]
    assert ctr.metric == "ctr"
    assert ctr.verdict == "ahead"
    assert ctr.always_valid_ci[0] > 0
    assert ctr.ci[0] > 0
    assert ctr.always_valid_ci[1] - ctr.always_valid_ci[0] > ctr.ci[1] - ctr.ci[0]


def test_experiments_from_config_and_data() -> None:
    impressions, events = small()
    impressions += [
        shown("x1", "u1", T0, experiment="old", variant="b"),
        shown("x2", "u2", T0, experiment="old", variant="a"),
        shown("y1", "u1", T0, experiment="legacy", variant="treatment"),
        shown("y2", "u2", T0, experiment="legacy", variant="control"),
        shown("c9", "u9", T0, variant="retired"),
    ]
    planned = Experiment(
        "planned", "s", "similar", T0 + 30 * DAY, None, (Variant("only", 100),), "only"
    )
    report = build_report(impressions, events, [planned, HOME], now_ms=T0)
    assert [e.name for e in report.experiments] == ["planned", "home", "legacy", "old"]
    empty = report.experiment("planned")
    assert [v.name for v in empty.variants] == ["only"]
    assert empty.variants[0].metrics.impressions == 0
    assert empty.comparisons == ()
    home = report.experiment("home")
    assert [v.name for v in home.variants] == ["control", "pop", "retired"]
    assert {c.variant for c in home.comparisons} == {"pop", "retired"}
    legacy = report.experiment("legacy")  # not configured: its "control" is the control
    assert legacy.control == "control"
    assert [v.name for v in legacy.variants] == ["control", "treatment"]
    old = report.experiment("old")  # no variant called control: no comparisons
    assert old.control is None
    assert [v.name for v in old.variants] == ["a", "b"]
    assert old.comparisons == ()
    json.dumps(report.to_json(), allow_nan=False)


def test_unknown_experiment() -> None:
    impressions, events = small()
    report = build_report(impressions, events, [HOME], now_ms=T0)
    with pytest.raises(UnknownIdError, match=r"no experiment 'homepage' .*known: 'home'"):
        report.experiment("homepage")
    with pytest.raises(UnknownIdError, match="homepage"):
        report.only("homepage")
    only = report.only("home")
    assert [e["name"] for e in only.to_json()["experiments"]] == ["home"]
    assert only.to_json()["traffic"]["surfaces"] == []
    with pytest.raises(UnknownIdError, match="variant"):
        report.experiment("home").variant("nope")
    assert build_report(impressions, events, [HOME], now_ms=T0, experiment="home") == only
    with pytest.raises(UnknownIdError, match="'homepage'"):
        build_report(impressions, events, [HOME], now_ms=T0, experiment="homepage")


def test_table() -> None:
    impressions, events = small()
    text = build_report(impressions, events, [HOME], now_ms=T0).table()
    assert "experiment home (control: control)" in text
    assert "25.00% [4.56, 69.94]" in text  # control ctr 1/4 and its Wilson interval
    assert "pop vs control" in text
    assert "all traffic outside experiments" in text
    assert "similar" in text
    assert "unknown_recommendation 1" in text
    empty = build_report([], [], [], now_ms=T0).table()
    assert "no impressions" in empty


def test_plot(tmp_path: Path) -> None:
    impressions, events = small()
    path = tmp_path / "feedback.png"
    build_report(impressions, events, [HOME], now_ms=T0).plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.png"
    build_report([], [], [], now_ms=T0).plot(empty)
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_window_is_passed_on() -> None:
    impressions = [shown("c1", "u1", T0)]
    events = [did("e1", "u1", "a", VIEW, T0 + 2 * 3_600_000, "c1")]
    late = build_report(impressions, events, [HOME], window_ms=3_600_000, now_ms=T0)
    assert late.experiment("home").variants[0].metrics.clicks == 0
    assert late.unattributed["expired"] == 1
    assert late.to_json()["window_ms"] == 3_600_000
