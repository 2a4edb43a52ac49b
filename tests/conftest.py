"""Shared fixtures: the MovieLens-100k folder (skipped when absent) and small data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from shelfrank.core.events import EventType
from shelfrank.datasets.records import FeatureTable, Interactions

REPO = Path(__file__).resolve().parent.parent
ML100K = Path(os.environ.get("SHELFRANK_ML100K", REPO.parent / "shared" / "data" / "ml-100k"))


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(
            f"MovieLens-100k not found at {ML100K} (licence forbids shipping it; set "
            "SHELFRANK_ML100K to its folder)"
        )
    return ML100K


def make_interactions(rows: list[tuple[str, str, str]]) -> Interactions:
    """Interactions from (user, item, event label) triples."""
    return Interactions.from_rows(
        [(u, i, EventType.parse(t), float(n), float("nan"), "") for n, (u, i, t) in enumerate(rows)]
    )


@pytest.fixture(scope="session")
def toy_shop() -> tuple[Interactions, FeatureTable, FeatureTable]:
    """Two tastes: users u0..u9 buy shoes, u10..u19 buy books; features say so too."""
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, str]] = []
    for user in range(20):
        prefix = "shoe" if user < 10 else "book"
        for item in rng.choice(15, size=8, replace=False):
            rows.append((f"u{user}", f"{prefix}{item}", "purchase" if item % 3 == 0 else "view"))
    items = FeatureTable(
        "item_id",
        ("category",),
        [f"{p}{i}" for p in ("shoe", "book") for i in range(16)],
        [(f"category={p}s",) for p in ("shoe", "book") for _ in range(16)],
    )
    users = FeatureTable(
        "user_id",
        ("segment",),
        [f"u{u}" for u in range(20)],
        [("segment=runner",) if u < 10 else ("segment=reader",) for u in range(20)],
    )
    return make_interactions(rows), items, users
