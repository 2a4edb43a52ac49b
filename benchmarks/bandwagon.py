"""Bandwagon shilling attack (issue 6): how far do 1% fake users move one item?

A synthetic shop is trained twice with the default settings and seed: clean, and with fake
users added (1% of the real users). Each fake user buys the target item (an unpopular one)
and views the shop's most popular items (the "bandwagon" that makes fake profiles look like
everyone else's). Reported: the share of real users with the target in their top 10, before
and after, and the target's rank for the median user. Defences in place by default: every
interaction of a user is weighted by its type (a purchase counts 1, a view 0.25), and
Track's per-user rate limit (50 events/s) slows scripted profiles but does not stop a
patient attacker, so this measures the model's own robustness.

    python benchmarks/bandwagon.py [--fake-share 0.01] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import machine_description

from shelfrank.core.events import EventType
from shelfrank.datasets.records import Interactions
from shelfrank.datasets.synth import SynthConfig, generate
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel


def attacked(clean: Interactions, target: str, bandwagon: list[str], fakes: int) -> Interactions:
    rows = list(clean.rows())
    stamp = float(np.max(clean.timestamps)) + 1.0
    for f in range(fakes):
        user = f"fake{f:04d}"
        rows.append((user, target, EventType.PURCHASE, stamp, float("nan"), f"{user}-t"))
        for j, item in enumerate(bandwagon):
            rows.append((user, item, EventType.VIEW, stamp, float("nan"), f"{user}-b{j}"))
    return Interactions.from_rows(rows)


def exposure(model: HybridModel, users: list[str], target: str, k: int = 10) -> dict[str, float]:
    serving = model.to_serving()
    row = serving.item_ids.index(target)
    hits, ranks = 0, []
    for user in users:
        vector = serving.user_vector(user)
        scores = serving.items.scores(vector.vector, vector.bias)  # type: ignore[arg-type]
        seen = serving.seen_rows(user)
        scores[seen[seen != row]] = -np.inf
        rank = int((scores > scores[row]).sum()) + 1
        ranks.append(rank)
        hits += rank <= k
    return {"hit_rate_at_10": hits / len(users), "median_rank": float(np.median(ranks))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fake-share", type=float, default=0.01)
    parser.add_argument("--bandwagon", type=int, default=20, help="popular items per fake user")
    parser.add_argument("--targets", type=int, default=3, help="attacked items (one at a time)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/bandwagon.json")
    args = parser.parse_args()
    shape = SynthConfig(items=2_000, users=1_500, events=60_000, seed=7)
    config = TrainConfig(seed=1, num_threads=1)
    if args.smoke:
        shape = SynthConfig(items=300, users=200, events=5_000, seed=7)
        config = TrainConfig(seed=1, num_threads=1, epochs=3)
        args.targets = 1
    shop = generate(shape)
    real_users = sorted(set(shop.interactions.user_ids))
    counts: dict[str, int] = {}
    for item in shop.interactions.item_ids:
        counts[item] = counts.get(item, 0) + 1
    by_popularity = sorted(counts, key=lambda i: (-counts[i], i))
    bandwagon = by_popularity[: args.bandwagon]
    # Unpopular but not absent: items in the 20th-40th percentile from the bottom.
    tail = by_popularity[int(len(by_popularity) * 0.6) : int(len(by_popularity) * 0.8)]
    rng = np.random.default_rng(3)
    targets = [str(t) for t in rng.choice(tail, size=args.targets, replace=False)]
    fakes = max(1, round(len(real_users) * args.fake_share))
    started = time.perf_counter()
    clean_model = HybridModel.train(shop.interactions, config, items=shop.items, users=shop.users)
    rows: list[dict[str, Any]] = []
    for target in targets:
        poisoned = attacked(shop.interactions, target, bandwagon, fakes)
        model = HybridModel.train(poisoned, config, items=shop.items, users=shop.users)
        before = exposure(clean_model, real_users, target)
        after = exposure(model, real_users, target)
        rows.append({"target": target, "purchases_before": counts[target], "before": before,
                     "after": after})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": machine_description(),
        "shop": {"items": shape.items, "users": shape.users, "events": shape.events},
        "fake_users": fakes,
        "fake_share": args.fake_share,
        "bandwagon_items": len(bandwagon),
        "targets": rows,
        "mean_hit_rate_before": float(np.mean([r["before"]["hit_rate_at_10"] for r in rows])),
        "mean_hit_rate_after": float(np.mean([r["after"]["hit_rate_at_10"] for r in rows])),
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "targets"}, indent=2))


if __name__ == "__main__":
    main()
