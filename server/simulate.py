"""A shopper simulator: the end-to-end test of the feedback loop (``shelfrank simulate``).

Synthetic shoppers with hidden tastes (:func:`shelfrank.datasets.synth.truth`: the
probability that one of their views is a given item, as the synthetic shop generator
draws them) browse a running server through the real SDK:

1. **Set-up.** The shop's catalogue and the shoppers' profiles are upserted, and a short
   history (``history_events`` from the generator) is tracked so that the server can
   train a first model on its normal schedule; the simulator waits for it.
2. **Rounds.** In each round every shopper asks once for ``k`` recommendations, "sees"
   them and reacts by their true taste, and every reaction is tracked with the response's
   recommendation id and the item's position. Reactions follow a position-based click
   model: position ``p`` (1-based) is examined with probability ``1 / log2(p + 1)``; an
   examined item is clicked (VIEW) with probability ``click_scale * r``, where ``r`` is
   the shopper's preference for the item relative to their favourite item (0..1); a click
   is carted with probability ``cart_rate`` and a cart bought with ``purchase_rate``; an
   examined, unclicked item is dismissed with probability ``dismiss_rate``.
3. Between rounds the simulator waits until the server has published a new model
   (its retraining runs on its own interval, on the stored events, feedback included), so
   every round is served by the model the previous rounds' feedback trained.

The result: per round the model version and, per variant, the share of responses with a
click measured by the simulator itself, and the server's report (attributed by the
server from the stored impressions and events) at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from shelfrank.client import Client, Event, EventType, FeedbackReport, Item, User
from shelfrank.core.errors import InvalidInputError, ShelfrankError
from shelfrank.datasets.synth import SynthConfig, generate, truth


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    shoppers: int = 2_000
    items: int = 1_000
    history_events: int = 2_000
    rounds: int = 4
    k: int = 10
    click_scale: float = 0.2
    cart_rate: float = 0.3
    purchase_rate: float = 0.5
    dismiss_rate: float = 0.02
    seed: int = 0
    # How long to wait for the server's first or next model (seconds).
    model_timeout: float = 600.0

    def __post_init__(self) -> None:
        for name in ("shoppers", "items", "history_events", "rounds", "k"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("click_scale", "cart_rate", "purchase_rate", "dismiss_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"{name}: must be in 0..1, got {value}")

    @property
    def shop(self) -> SynthConfig:
        return SynthConfig(
            items=self.items, users=self.shoppers, events=self.history_events, seed=self.seed
        )


@dataclass(frozen=True)
class VariantRound:
    responses: int
    clicked: int  # responses with at least one click
    purchased: int  # responses with at least one purchase

    @property
    def ctr(self) -> float:
        return self.clicked / self.responses if self.responses else 0.0


@dataclass(frozen=True, kw_only=True)
class RoundResult:
    number: int
    model_version: str
    variants: dict[str, VariantRound]
    events: int

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.number,
            "model_version": self.model_version,
            "events": self.events,
            "variants": {
                name: {
                    "responses": v.responses,
                    "clicked": v.clicked,
                    "purchased": v.purchased,
                    "ctr": round(v.ctr, 5),
                }
                for name, v in sorted(self.variants.items())
            },
        }


@dataclass
class SimulationResult:
    config: SimulationConfig
    rounds: list[RoundResult] = field(default_factory=list)
    report: FeedbackReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {
                "shoppers": self.config.shoppers,
                "items": self.config.items,
                "history_events": self.config.history_events,
                "rounds": self.config.rounds,
                "k": self.config.k,
                "seed": self.config.seed,
            },
            "rounds": [r.to_json() for r in self.rounds],
        }

    def table(self) -> str:
        names = sorted({name for r in self.rounds for name in r.variants})
        width = max([len("model version"), *(len(r.model_version) for r in self.rounds)])
        lines = [
            f"round  {'model version':{width}}" + "".join(f"  {n + ' CTR':>14}" for n in names)
        ]
        for r in self.rounds:
            cells = "".join(
                f"  {r.variants[n].ctr:14.4f}" if n in r.variants else f"  {'-':>14}" for n in names
            )
            lines.append(f"{r.number:5d}  {r.model_version:{width}}{cells}")
        return "\n".join(lines)


def examined(k: int) -> np.ndarray:
    """Probability that position 1..k is looked at."""
    return np.array([1.0 / math.log2(p + 1) for p in range(1, k + 1)])


class Simulator:
    """Drives ``client`` with the shoppers of ``config`` (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        config: SimulationConfig,
        *,
        progress: bool = False,
        on_round: Callable[[RoundResult], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.progress = progress
        self.on_round = on_round
        self.rng = np.random.default_rng(config.seed + 1)
        self.data = generate(config.shop)
        self.truth = truth(config.shop)
        preference = self.truth.preference(np.arange(config.shoppers))
        # Relative to the shopper's favourite item: 1 for it, near 0 for what they ignore.
        self.relative = preference / preference.max(axis=1, keepdims=True)
        self.item_row = {item: row for row, item in enumerate(self.truth.item_ids)}
        self.examine = examined(config.k)

    def set_up(self) -> str:
        """Catalogue, profiles and the short history; returns the first model version."""
        data = self.data
        self.client.upsert_items(
            Item(item_id, tokens)
            for item_id, tokens in zip(data.items.ids, data.items.tokens, strict=True)
        )
        self.client.upsert_users(
            User(user_id, tokens)
            for user_id, tokens in zip(data.users.ids, data.users.tokens, strict=True)
        )
        history = data.interactions
        now_ms = int(time.time() * 1000)
        last = float(history.timestamps[-1]) if len(history) else 0.0
        shift = now_ms - int(last * 1000) - 60_000  # the history ends a minute ago
        self.client.track(
            Event(
                user,
                item,
                EventType(int(kind)),
                event_id=f"sim-history-{event_id}",
                timestamp_ms=int(stamp * 1000) + shift,
            )
            for user, item, kind, stamp, event_id in zip(
                history.user_ids,
                history.item_ids,
                history.event_types,
                history.timestamps,
                history.event_ids,
                strict=True,
            )
        )
        return self.wait_for_model("")

    def wait_for_model(self, after: str) -> str:
        """The server's model version once it differs from ``after``."""
        deadline = time.monotonic() + self.config.model_timeout
        while True:
            version = self.client.model_info().model_version
            if version and version != after:
                return version
            if time.monotonic() > deadline:
                raise ShelfrankError(
                    f"simulate: no new model after {self.config.model_timeout:g} s "
                    f"(serving {after or 'none'}); is the server retraining (--retrain-interval)?"
                )
            time.sleep(0.2)

    def play_round(self, number: int) -> RoundResult:
        config = self.config
        tallies: dict[str, list[int]] = {}
        events: list[Event] = []
        version = ""
        shoppers = self.truth.user_ids
        for user_row in tqdm(
            range(config.shoppers),
            desc=f"round {number}",
            unit="shopper",
            disable=not self.progress,
        ):
            user = shoppers[user_row]
            response = self.client.recommend(user, k=config.k)
            version = response.model_version
            rows = [self.item_row[item.item_id] for item in response.items]
            looked = self.rng.random(len(rows)) < self.examine[: len(rows)]
            clicks = looked & (
                self.rng.random(len(rows)) < config.click_scale * self.relative[user_row, rows]
            )
            carts = clicks & (self.rng.random(len(rows)) < config.cart_rate)
            buys = carts & (self.rng.random(len(rows)) < config.purchase_rate)
            dismissed = looked & ~clicks & (self.rng.random(len(rows)) < config.dismiss_rate)
            for position, item in enumerate(response.items, start=1):
                index = position - 1
                kinds = (
                    [EventType.VIEW] * bool(clicks[index])
                    + [EventType.ADD_TO_CART] * bool(carts[index])
                    + [EventType.PURCHASE] * bool(buys[index])
                    + [EventType.DISMISS] * bool(dismissed[index])
                )
                events.extend(
                    Event(
                        user,
                        item.item_id,
                        kind,
                        recommendation_id=response.recommendation_id,
                        position=position,
                    )
                    for kind in kinds
                )
            tally = tallies.setdefault(response.variant, [0, 0, 0])
            tally[0] += 1
            tally[1] += int(clicks.any())
            tally[2] += int(buys.any())
        self.client.track(events)
        result = RoundResult(
            number=number,
            model_version=version,
            variants={name: VariantRound(*t) for name, t in tallies.items()},
            events=len(events),
        )
        if self.on_round is not None:
            self.on_round(result)
        return result

    def run(self, experiment: str = "") -> SimulationResult:
        result = SimulationResult(self.config)
        version = self.set_up()
        for number in range(1, self.config.rounds + 1):
            round_result = self.play_round(number)
            result.rounds.append(round_result)
            if number < self.config.rounds:
                version = self.wait_for_model(round_result.model_version or version)
        result.report = self.client.report(experiment)
        return result


__all__ = ["RoundResult", "SimulationConfig", "SimulationResult", "Simulator", "VariantRound"]
