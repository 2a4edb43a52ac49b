"""The service layer's results as the JSON API's documents (server/dashboard/openapi.py
describes them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shelfrank.core.explain import Explanation
from shelfrank.server.service import ItemInsight, Overview, Scored, UserLook
from shelfrank.server.storage import AuditEntry, EvaluationInfo, ReplicaSample

MAX_EVENTS = 100  # a user's events shown, newest first


def explanation(explained: Explanation) -> dict[str, Any]:
    return {
        "reason": explained.reason,
        "because": list(explained.because),
        "contributions": [
            {"source": source, "value": value} for source, value in explained.contributions
        ],
        "rest": explained.rest,
    }


def recommendations(scored: Scored) -> dict[str, Any]:
    explanations: Sequence[Explanation | None] = scored.explanations or [None] * len(scored.items)
    return {
        "strategy": scored.strategy,
        "model_version": scored.model_version,
        "variant": scored.variant,
        "experiment": scored.experiment,
        "items": [
            {
                "item_id": item,
                "score": score,
                "explanation": None if explained is None else explanation(explained),
            }
            for (item, score), explained in zip(scored.items, explanations, strict=True)
        ],
    }


def user(user_id: str, look: UserLook) -> dict[str, Any]:
    # Newest first by the time the event happened; of the same millisecond, the later stored.
    newest = sorted(
        look.view.events, key=lambda pair: (pair[1].timestamp_ms, pair[0]), reverse=True
    )
    return {
        "user_id": user_id,
        "profile": list(look.view.profile),
        "events": [
            {
                "time_ms": event.timestamp_ms,
                "type": event.event_type.label,
                "item_id": event.item_id,
                "query": event.query,
            }
            for _, event in newest[:MAX_EVENTS]
        ],
        "recommendations": recommendations(look.recommendations),
    }


def item(insight: ItemInsight, similar: Scored) -> dict[str, Any]:
    return {
        "item_id": insight.item.item_id,
        "features": list(insight.item.tokens),
        "available": insight.item.available,
        "similar": recommendations(similar),
        "shown": insight.shown,
        "clicked": insight.clicked,
        "window_days": insight.window_days,
        "audit": audit(insight.audit),
    }


def overview(found: Overview, *, replica: str, role: str, now_ms: int) -> dict[str, Any]:
    published = found.published_ms
    return {
        "model": {
            "version": found.model_version,
            "published_ms": published,
            "age_s": None if published is None else (now_ms - published) / 1000.0,
            "trained": found.trained,
            "strategy": "model" if found.trained else "popularity",
        },
        "trainer": {"holder": found.trainer, "role": role},
        "counts": {
            "users": found.users,
            "items": found.items,
            "events": found.events,
            "available_items": found.available_items,
        },
        "replicas": replicas(found.samples),
        "this_replica": replica,
    }


def audit(entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    return [
        {"time_ms": e.time_ms, "actor": e.actor, "action": e.action, "detail": e.detail}
        for e in entries
    ]


def evaluation(info: EvaluationInfo) -> dict[str, Any]:
    return {"name": info.name, "saved_ms": info.saved_ms, "files": list(info.files)}


def replicas(samples: Sequence[ReplicaSample]) -> list[dict[str, Any]]:
    """Samples (ordered by replica, time) grouped per replica."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        values = sample.values
        grouped.setdefault(sample.replica, []).append(
            {
                "time_ms": sample.time_ms,
                "events_per_s": float(values.get("events_per_s", 0.0)),
                "recommend_p50_ms": values.get("recommend_p50_ms"),
                "recommend_p99_ms": values.get("recommend_p99_ms"),
                "recommend_calls": int(values.get("recommend_calls", 0)),
            }
        )
    return [{"replica": replica, "samples": rows} for replica, rows in grouped.items()]
