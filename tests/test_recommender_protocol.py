"""Client, AsyncClient and EdgeRecommender take the same calls (one Recommender interface):
an app swaps the remote client for the device library without touching its calls."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from shelfrank.client import AsyncClient, AsyncRecommender, Client, Recommender
from shelfrank.edge import EdgeRecommender

# What the device adds (keyword-only, with defaults): calls written for the client never
# pass it.
DEVICE_EXTRAS = {"use_session"}


def _parameters(function: Any) -> list[tuple[str, Any, Any, Any]]:
    signature = inspect.signature(function)
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in signature.parameters.values()
        if p.name not in DEVICE_EXTRAS
    ]


def test_the_three_implement_one_interface_parameter_for_parameter() -> None:
    for method in ("recommend", "rank"):
        interface = _parameters(getattr(Recommender, method))
        assert _parameters(getattr(Client, method)) == interface, method
        assert _parameters(getattr(AsyncRecommender, method)) == interface, method
        assert _parameters(getattr(AsyncClient, method)) == interface, method
        device = _parameters(getattr(EdgeRecommender, method))
        # The device's user_id defaults to its own user (and must be it when given).
        names = [(name, kind) for name, kind, _, _ in device]
        assert names == [(name, kind) for name, kind, _, _ in interface], method
        for (name, _, default, annotation), (_, _, want_default, want) in zip(
            device, interface, strict=True
        ):
            if name in {"user_id", "item_ids"}:
                continue
            assert (default, annotation) == (want_default, want), (method, name)
        assert inspect.iscoroutinefunction(getattr(AsyncClient, method))


def test_one_call_runs_on_the_device_and_is_typed_as_the_interface(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    def top_three(recommender: Recommender, user: str) -> tuple[str, ...]:
        return recommender.recommend(user, 3, exclude_seen=False, diversity=0.2).item_ids

    phone = EdgeRecommender(tmp_path / "phone", "u0", snapshot=toy_model_dir)
    try:
        assert len(top_three(phone, "u0")) == 3
    finally:
        phone.close()


def test_the_device_tracks_what_an_event_carries() -> None:
    """``EdgeRecommender.track`` takes ``Event``'s feedback keywords, with its defaults, so
    an app attributes its feedback the same way on either side."""
    from shelfrank.client import Event

    event = inspect.signature(Event.__init__).parameters
    device = inspect.signature(EdgeRecommender.track).parameters
    for name in ("recommendation_id", "position", "session_id", "query"):
        assert device[name].default == event[name].default, name
        assert device[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert event["recommendation_id"].kind is inspect.Parameter.KEYWORD_ONLY
    assert event["position"].kind is inspect.Parameter.KEYWORD_ONLY


def test_every_recommender_labels_its_lists_with_the_variant(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    from shelfrank.core.experiments import Experiment, Variant

    only = Experiment("home", "home", "recommend", None, None, (Variant("only", 100),), "only")
    phone = EdgeRecommender(tmp_path / "phone", "u0", snapshot=toy_model_dir, experiments=[only])
    try:
        recs = phone.recommend("u0", 2)
        assert (recs.experiment, recs.variant) == ("home", "only")
    finally:
        phone.close()
