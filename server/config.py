"""Training configuration of the hybrid model."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import DEFAULT_EVENT_WEIGHTS, EventType
from shelfrank.core.foldin import FoldInConfig

LOSSES = ("warp", "bpr", "warp-kos", "logistic")
ITEM_COLD_START = ("ridge", "lightfm")
SCHEDULES = ("adagrad", "adadelta")
ITEM_ITEM = ("auto", "ease", "knn", "off")
VALIDATION_SPLITS = ("time", "random")


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of training. Defaults were chosen on ml-100k (see README: Evaluation).

    ``identity_weight`` is the weight of an entity's own identity feature relative to
    each metadata token before its feature row is normalised to sum to one: identity
    carries collaborative signal, tokens carry content and cold-start signal.
    """

    components: int = 64
    loss: str = "warp"
    epochs: int = 30
    learning_rate: float = 0.05
    learning_schedule: str = "adagrad"
    rho: float = 0.95
    epsilon: float = 1e-6
    item_alpha: float = 0.0
    user_alpha: float = 0.0
    max_sampled: int = 10
    identity_weight: float = 3.0
    # How items without interactions get vectors: "ridge" (a map from tokens to learned
    # vectors, see server/cold_start.py) or "lightfm" (LightFM's token embeddings).
    item_cold_start: str = "ridge"
    use_item_features: bool = True
    use_user_features: bool = True
    event_weights: Mapping[EventType, float] = field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS)
    )
    num_threads: int = field(default_factory=_default_threads)
    seed: int | None = None
    fold_in: FoldInConfig = field(default_factory=FoldInConfig)
    # Blended ranking (core/blend.py, server/blend_fit.py): the model's score blended with
    # item-to-item, repeat and trend signals, weights fitted on the last
    # ``validation_fraction`` of the events by time (skipped with fewer than
    # ``min_validation_users`` validation shoppers or without timestamps).
    blend: bool = True
    half_life_days: float | None = None  # trend and repeat; None: chosen on validation
    item_half_life_days: float | None = None  # item-to-item votes; None: chosen likewise
    item_item: str = "auto"  # auto | ease | knn | off
    item_item_l2: float | None = None  # EASE's lambda; None: chosen on the validation split
    knn_shrink: float = 10.0
    neighbours: int = 200
    validation_fraction: float = 0.1
    # "time": the newest events (a shop predicting its next weeks); "random": a seeded
    # share of each shopper's items (when the test is a random hold-out, as MovieLens' ua).
    validation_split: str = "time"
    min_validation_users: int = 50
    # A (segment, mode) with fewer than ``bag_below`` validation shoppers gets the mean of
    # the weights fitted on ``blend_bags`` bootstrap resamples of them (bagging: with few
    # shoppers the single best grid point is mostly chance); 0 bags: the plain fit.
    blend_bags: int = 20
    bag_below: int = 300

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.components >= 1, f"components: must be >= 1, got {self.components}"),
            (self.loss in LOSSES, f"loss: must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (self.epochs >= 1, f"epochs: must be >= 1, got {self.epochs}"),
            (self.learning_rate > 0, f"learning_rate: must be > 0, got {self.learning_rate}"),
            (
                self.learning_schedule in SCHEDULES,
                f"learning_schedule: must be one of {', '.join(SCHEDULES)}, "
                f"got {self.learning_schedule!r}",
            ),
            (0 < self.rho < 1, f"rho: must be in (0, 1), got {self.rho}"),
            (self.epsilon > 0, f"epsilon: must be > 0, got {self.epsilon}"),
            (self.item_alpha >= 0, f"item_alpha: must be >= 0, got {self.item_alpha}"),
            (self.user_alpha >= 0, f"user_alpha: must be >= 0, got {self.user_alpha}"),
            (self.max_sampled >= 1, f"max_sampled: must be >= 1, got {self.max_sampled}"),
            (self.identity_weight > 0, f"identity_weight: must be > 0, got {self.identity_weight}"),
            (
                self.item_cold_start in ITEM_COLD_START,
                f"item_cold_start: must be one of {', '.join(ITEM_COLD_START)}, "
                f"got {self.item_cold_start!r}",
            ),
            (self.num_threads >= 1, f"num_threads: must be >= 1, got {self.num_threads}"),
            (
                self.half_life_days is None or self.half_life_days > 0,
                f"half_life_days: must be > 0, got {self.half_life_days}",
            ),
            (
                self.item_half_life_days is None or self.item_half_life_days > 0,
                f"item_half_life_days: must be > 0, got {self.item_half_life_days}",
            ),
            (
                self.item_item in ITEM_ITEM,
                f"item_item: must be one of {', '.join(ITEM_ITEM)}, got {self.item_item!r}",
            ),
            (
                self.item_item_l2 is None or self.item_item_l2 > 0,
                f"item_item_l2: must be > 0, got {self.item_item_l2}",
            ),
            (
                self.validation_split in VALIDATION_SPLITS,
                f"validation_split: must be one of {', '.join(VALIDATION_SPLITS)}, "
                f"got {self.validation_split!r}",
            ),
            (self.knn_shrink >= 0, f"knn_shrink: must be >= 0, got {self.knn_shrink}"),
            (self.neighbours >= 1, f"neighbours: must be >= 1, got {self.neighbours}"),
            (
                0 < self.validation_fraction < 1,
                f"validation_fraction: must be in (0, 1), got {self.validation_fraction}",
            ),
            (
                self.min_validation_users >= 1,
                f"min_validation_users: must be >= 1, got {self.min_validation_users}",
            ),
            (self.blend_bags >= 0, f"blend_bags: must be >= 0, got {self.blend_bags}"),
            (self.bag_below >= 1, f"bag_below: must be >= 1, got {self.bag_below}"),
            (
                self.seed is None or 0 <= self.seed < 2**32,
                f"seed: must be in [0, 2**32), got {self.seed}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)
        for kind, weight in self.event_weights.items():
            if not isinstance(kind, EventType):
                raise InvalidInputError(f"event_weights: key {kind!r} is not an EventType")
            if kind is EventType.DISMISS:
                continue
            if not weight >= 0:
                raise InvalidInputError(f"event_weights[{kind.label}]: must be >= 0, got {weight}")
        missing = [k.label for k in EventType if k not in self.event_weights]
        if missing:
            raise InvalidInputError(f"event_weights: missing {', '.join(missing)}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["event_weights"] = {k.label: float(v) for k, v in self.event_weights.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainConfig:
        values = dict(data)
        weights = values.pop("event_weights", None)
        fold = values.pop("fold_in", None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(f"params: unknown field(s) {', '.join(unknown)}")
        config = cls(**values)
        if weights is not None:
            parsed = {EventType.parse(k): float(v) for k, v in dict(weights).items()}
            config = cls(**{**values, "event_weights": parsed})
        if fold is not None:
            config = cls(
                **{
                    **values,
                    "event_weights": config.event_weights,
                    "fold_in": FoldInConfig(**dict(fold)),
                }
            )
        return config
