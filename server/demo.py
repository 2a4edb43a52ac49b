"""``shelfrank demo``: the offline pipeline end to end on synthetic shop data.

Generates a small catalogue with the synthetic generator, trains the hybrid model with a
progress bar, saves and reloads it (checksummed model directory), then shows each way a
shopper can be served: a known shopper, a brand-new shopper with only profile features,
a new shopper folded in from three views, and a shopper we know nothing about.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from shelfrank.core.model_format import load_serving_model
from shelfrank.datasets.synth import SynthConfig, generate, write
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.offline import Recommendation, recommend_users


def _category(tokens: dict[str, tuple[str, ...]], item: str) -> str:
    for token in tokens.get(item, ()):
        if token.startswith("category="):
            return token.split("=", 1)[1]
    return "?"


def _show(title: str, rec: Recommendation, tokens: dict[str, tuple[str, ...]]) -> None:
    shown = ", ".join(
        f"{item} [{_category(tokens, item)}] {score:.2f}" for item, score in rec.items
    )
    print(f"  {title} ({rec.source}): {shown}")


def run_demo(out: Path) -> None:
    data_dir, model_dir = out / "data", out / "model"
    print("1. synthetic shop: 2,000 items, 1,500 shoppers, 60,000 events")
    synthetic = generate(SynthConfig(items=2_000, users=1_500, events=60_000, seed=7))
    paths = write(synthetic, data_dir)
    print(f"   written to {paths.interactions.parent}")

    print("2. training the hybrid model (identity + metadata features, WARP)")
    model = HybridModel.train(
        synthetic.interactions,
        TrainConfig(seed=7, epochs=20),
        items=synthetic.items,
        users=synthetic.users,
        progress=True,
    )
    print(f"   {model.summary}")
    manifest = model.save(model_dir)
    serving, _ = load_serving_model(model_dir)
    print(
        f"   model {manifest['model_version']} saved to {model_dir} and reloaded (sha256-verified)"
    )

    item_tokens = synthetic.items.as_dict()
    print("3. top-5 recommendations [category] score")
    known = synthetic.interactions.user_ids[0]
    history = [
        synthetic.interactions.item_ids[i]
        for i in range(len(synthetic.interactions))
        if synthetic.interactions.user_ids[i] == known
    ]
    liked = Counter(_category(item_tokens, item) for item in history).most_common(2)
    print(f"  known shopper {known} mostly browsed {liked}")

    def top5(user: str, **context: Any) -> Recommendation:
        return next(recommend_users(serving, [user], 5, exclude_seen=True, **context))

    _show(f"known shopper {known}", top5(known), item_tokens)

    profile = synthetic.users.tokens[1]
    new_one = top5("new-shopper-1", user_tokens={"new-shopper-1": profile})
    _show(f"new shopper with profile {list(profile)}", new_one, item_tokens)

    category = _category(item_tokens, synthetic.items.ids[0])
    viewed = [i for i in synthetic.items.ids if _category(item_tokens, i) == category][:3]
    rows = serving.item_rows(viewed)
    histories = {"new-shopper-2": (rows, np.full(rows.size, 0.25, np.float32))}
    print(f"  new shopper 2 viewed {viewed} (category {category})")
    _show("new shopper 2 after 3 views", top5("new-shopper-2", histories=histories), item_tokens)
    _show("shopper we know nothing about", top5("stranger"), item_tokens)
    print(
        f"done. Try: shelfrank recommend --model {model_dir} --users all --k 10 "
        f"--exclude-seen --out {out / 'recs.jsonl'}"
    )
