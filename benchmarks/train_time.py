"""Training time of ``HybridModel.train`` against a bare ``LightFM.fit`` on the same
matrices and settings, measured in one run (alternating, several repeats; the machine is
shared, so only the ratio is meaningful).

    python benchmarks/train_time.py --ml100k ../shared/data/ml-100k [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from lightfm import LightFM
from machine import machine_description  # benchmarks/machine.py

from shelfrank.datasets import movielens
from shelfrank.datasets.synth import SynthConfig, generate
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.lightfm_params import new_lightfm
from shelfrank.server.training_data import build_training_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ml100k", default="../shared/data/ml-100k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/train_time.json")
    parser.add_argument("--smoke", action="store_true", help="a tiny synthetic shop, 1 repeat")
    args = parser.parse_args()

    if args.smoke:
        shop = generate(SynthConfig(items=300, users=200, events=5_000, seed=1))
        train, items, users = shop.interactions, shop.items, shop.users
        config = TrainConfig(seed=1, num_threads=args.threads, epochs=2)
        args.repeats, data_name = 1, "synthetic smoke shop (300 items)"
    else:
        folder = Path(args.ml100k)
        train, _ = movielens.read_ratings(folder / "ua.base")
        items, users = movielens.read_items(folder), movielens.read_users(folder)
        config = TrainConfig(seed=1, num_threads=args.threads)
        data_name = "ml-100k ua.base (90,570 ratings), default TrainConfig, seed 1"

    data = build_training_data(train, config, items=items, users=users)
    user_features, item_features = data.users.matrix(), data.items.matrix()

    def bare() -> float:
        model: LightFM = new_lightfm(config)
        tick = time.perf_counter()
        model.fit(
            data.weights,
            user_features=user_features,
            item_features=item_features,
            sample_weight=data.weights,
            epochs=config.epochs,
            num_threads=config.num_threads,
        )
        return time.perf_counter() - tick

    def ours() -> tuple[float, float]:
        tick = time.perf_counter()
        model = HybridModel.train(train, config, items=items, users=users)
        model.to_serving()
        total = time.perf_counter() - tick
        return total, model.summary.fit_seconds if model.summary else float("nan")

    bare_times, total_times, fit_times = [], [], []
    for _ in range(args.repeats):  # alternate so drift hits both sides alike
        bare_times.append(bare())
        total, fit = ours()
        total_times.append(total)
        fit_times.append(fit)
    result = {
        "machine": machine_description(),
        "data": data_name,
        "target": "ratio_total_vs_bare_median <= 1.2",
        "threads": args.threads,
        "bare_lightfm_fit_s": [round(t, 3) for t in bare_times],
        "shelfrank_train_total_s": [round(t, 3) for t in total_times],
        "shelfrank_fit_only_s": [round(t, 3) for t in fit_times],
        "ratio_total_vs_bare_median": round(
            statistics.median(total_times) / statistics.median(bare_times), 3
        ),
        "ratio_fit_vs_bare_median": round(
            statistics.median(fit_times) / statistics.median(bare_times), 3
        ),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
