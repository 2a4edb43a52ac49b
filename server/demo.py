"""``shelfrank demo``: the whole loop on synthetic shop data.

Offline: generate a small catalogue, train the hybrid model (progress bar), save and reload
it (checksummed model directory), and show each way a shopper is served. Live: start the
gRPC server on a loopback port, track a session through the Python SDK and watch the
recommendations follow it at once; add a product and recommend it immediately; then a
device (edge SDK) syncs a snapshot, goes offline and reranks with its own session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
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
    run_live(out, model_dir, item_tokens, category)
    print(
        f"done. Try: shelfrank serve --state {out / 'state'} --model {model_dir}  and  "
        f"shelfrank recommend --model {model_dir} --users all --k 10 --exclude-seen "
        f"--out {out / 'recs.jsonl'}"
    )


def _categories(items: Sequence[str], tokens: dict[str, tuple[str, ...]]) -> str:
    return ", ".join(f"{item} [{_category(tokens, item)}]" for item in items)


def run_live(out: Path, model_dir: Path, tokens: dict[str, tuple[str, ...]], category: str) -> None:
    """The live half: server + SDK + edge device, all on this machine."""
    import shutil

    from shelfrank.client import Client, Event, FeatureFilter, Item
    from shelfrank.edge import EdgeRecommender
    from shelfrank.server.app import ServerOptions, start

    state = out / "state"
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(out / "device", ignore_errors=True)
    print("4. live: gRPC server on a loopback port, Python SDK, edge device")
    running = start(ServerOptions(state_dir=state, port=0, model_dir=model_dir))
    target = f"127.0.0.1:{running.port}"
    try:
        with Client(target) as client:
            print(f"   server {target} serving model {client.model_info().model_version}")
            shopper = "live-shopper"
            print(
                f"   {shopper} (new): {_categories(client.recommend(shopper, 5).item_ids, tokens)}"
            )
            wanted = [i for i, t in tokens.items() if f"category={category}" in t][5:9]
            client.track([Event(shopper, item, "view") for item in wanted])
            after = client.recommend(shopper, 5)
            print(
                f"   after 4 views in {category} ({after.strategy.value}): "
                f"{_categories(after.item_ids, tokens)}"
            )
            client.upsert_items([Item("brand-new-sku", [f"category={category}", "brand=demo"])])
            fresh = client.recommend(shopper, 3, filters=[FeatureFilter(["brand=demo"])])
            print(f"   a product added a second ago is recommendable: {fresh.item_ids}")
        phone = EdgeRecommender(out / "device", "live-shopper", target)
        synced = phone.sync()
        print(
            f"   device synced snapshot {synced.snapshot_version} "
            f"({synced.snapshot_bytes:,} bytes, int8)"
        )
        running.stop()
        before = phone.recommend(k=5)
        print(
            f"   server stopped; the device still recommends from its snapshot: "
            f"{_categories(before.item_ids, tokens)}"
        )
        other = next(c for c in sorted({_category(tokens, i) for i in tokens}) if c != category)
        for item in [i for i, t in tokens.items() if f"category={other}" in t][:4]:
            phone.track("view", item)
        offline = phone.recommend(k=5)
        print(
            f"   after 4 views in {other} on the device, reranked offline "
            f"({offline.strategy.value}): {_categories(offline.item_ids, tokens)}"
        )
        print(f"   {phone.pending_events()} events wait in the device's outbox for the next sync")
        phone.close()
    finally:
        if running.server is not None:
            running.server.stop(0)
