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
