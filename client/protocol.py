"""One interface for the remote client and the device library: code written against
:class:`Recommender` runs on ``Client`` and on ``shelfrank.edge.EdgeRecommender`` without a
change to its calls (``AsyncClient`` offers the same as coroutines:
:class:`AsyncRecommender`). The device recommends for its own user only and ignores
``user_features`` and ``timeout`` (it holds the user's vector and waits for nothing).
``tests/test_recommender_protocol.py`` keeps the three signatures equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from shelfrank.client.types import EventType, FeatureFilter, Recommendations


class Recommender(Protocol):
    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        exclude_item_ids: Iterable[str] = (),
        filters: Iterable[FeatureFilter] = (),
        exclude_features: Iterable[str] = (),
        exclude_seen: bool = True,
        user_features: Iterable[str] = (),
        diversity: float = 0.0,
        max_per_feature: Mapping[str, int] | None = None,
        exploration: float | None = None,
        exploration_max_age_ms: int | None = None,
        exclude_event_types: Iterable[EventType | str] = (),
        exclude_within_ms: int = 0,
        recommendation_id: str = "",
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recommendations: ...

    def rank(
        self,
        user_id: str,
        item_ids: Iterable[str],
        *,
        user_features: Iterable[str] = (),
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recommendations: ...


class AsyncRecommender(Protocol):
    async def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        exclude_item_ids: Iterable[str] = (),
        filters: Iterable[FeatureFilter] = (),
        exclude_features: Iterable[str] = (),
        exclude_seen: bool = True,
        user_features: Iterable[str] = (),
        diversity: float = 0.0,
        max_per_feature: Mapping[str, int] | None = None,
        exploration: float | None = None,
        exploration_max_age_ms: int | None = None,
        exclude_event_types: Iterable[EventType | str] = (),
        exclude_within_ms: int = 0,
        recommendation_id: str = "",
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recommendations: ...

    async def rank(
        self,
        user_id: str,
        item_ids: Iterable[str],
        *,
        user_features: Iterable[str] = (),
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recommendations: ...


__all__ = ["AsyncRecommender", "Recommender"]
