"""What the blend costs (issue 13): training time, serving model memory and Recommend p50,
the blended model against the plain hybrid LightFM model (what shelfrank trained before),
on the same synthetic shop, in one run.

Shop: ``SynthConfig.shop`` (repeat purchases, trends, launches, shoppers joining over
time), 100k items, 20k users, 1M events by default. Both models use the default
``TrainConfig`` but for ``blend`` (and two training threads, seed 1). Recommend p50 is
measured through the real gRPC server (a child process per model, both running over one
store holding the shop's events below the watermark), one client calling them in turn, a
short point each, for ``--rounds`` rounds; the ratio is the median of the rounds' ratios, so
a slow stretch of the shared machine hits both. The in-process ``ServingModel.rank`` p50 is
reported beside it, with the server's compiled search and with numpy alone. Trainings
alternate too (``--train-rounds``).

    python benchmarks/blend_cost.py [--items 100000 --users 20000 --events 1000000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from machine import machine_description  # benchmarks/machine.py
from serving import child_server, prepare_state, recommend_call, run_point, serve, write_model

from shelfrank.core.model_format import load_serving_model
from shelfrank.datasets.synth import SynthConfig, generate
from shelfrank.server.ann import SearchPolicy
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel


def model_bytes(directory: Path) -> dict[str, int]:
    serving = directory / "serving.npz"
    arrays = np.load(serving, allow_pickle=False)
    try:
        loaded = sum(int(arrays[name].nbytes) for name in arrays.files)
    finally:
        arrays.close()
    return {"serving_npz_bytes": serving.stat().st_size, "serving_arrays_bytes": loaded}


def in_process_p50(directory: Path, users: list[str], calls: int, compiled: bool) -> float:
    """``ServingModel.rank`` p50 (ms): with the server's compiled search (what a server
    runs) or with numpy alone (what the CLI and a device run)."""
    model, _ = load_serving_model(directory)
    SearchPolicy(compiled=compiled).prepare(model.items)
    timings = []
    for index in range(calls):
        user_id = users[index % len(users)]
        tick = time.perf_counter()
        user = model.user_vector(user_id)
        model.rank(user, 10, mode="repeat")
        timings.append(time.perf_counter() - tick)
    return float(np.median(timings[len(timings) // 10 :]) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument(
        "--train-rounds",
        type=int,
        default=2,
        help="trainings of each model, alternating plain and blend (the median is reported)",
    )
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--smoke", action="store_true", help="tiny run in seconds")
    parser.add_argument("--out", default="benchmarks/results/blend_cost.json")
    args = parser.parse_args()
    config = TrainConfig(num_threads=2, seed=1)
    if args.smoke:
        args.items, args.users, args.events, args.rounds, args.duration = 600, 600, 20_000, 1, 0.3
        args.train_rounds = 1
        config = replace(config, epochs=2, components=8, min_validation_users=5)
    shop = generate(SynthConfig.shop(args.items, args.users, args.events, seed=5))
    result: dict[str, Any] = {
        "machine": machine_description(),
        "settings": {
            "shop": {"items": args.items, "users": args.users, "events": args.events},
            "config": "TrainConfig defaults, 2 threads, seed 1; only `blend` differs",
            "rounds": args.rounds,
            "train_rounds": args.train_rounds,
            "duration_s_per_point": args.duration,
            "smoke": args.smoke,
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="shelfrank-blend-cost-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        watermark = prepare_state(state, shop)
        directories: dict[str, Path] = {}
        train_s: dict[str, list[float]] = {"plain": [], "blend": []}
        # Alternating trainings, so a slow stretch of the shared machine hits both models.
        for round_index in range(args.train_rounds):
            for name, blend in (("plain", False), ("blend", True)):
                tick = time.perf_counter()
                hybrid = HybridModel.train(
                    shop.interactions,
                    replace(config, blend=blend),
                    items=shop.items,
                    users=shop.users,
                    progress=not args.smoke,
                )
                seconds = time.perf_counter() - tick
                train_s[name].append(seconds)
                print(f"{name}: trained in {seconds:.1f} s", flush=True)
                if round_index < args.train_rounds - 1:
                    continue
                directories[name] = Path(tmp) / name
                write_model(directories[name], hybrid.to_serving(), hybrid, watermark)
                result["models"][name] = {
                    "train_s": round(float(np.median(train_s[name])), 2),
                    "train_s_rounds": [round(v, 2) for v in train_s[name]],
                    **model_bytes(directories[name]),
                    "blend_fit": hybrid.blend_report,
                }
        model, _ = load_serving_model(directories["plain"])
        users = list(model.user_ids.ids)[:500]
        p50: dict[str, list[float]] = {"plain": [], "blend": []}
        # Both servers run for the whole measurement (two processes over one store, as
        # replicas do) and are called in turn, a short point each, so a slow stretch of the
        # shared machine lands on both; the ratio is the median of the rounds' ratios.
        with (
            child_server(serve, str(state), str(directories["plain"]), {}) as (plain_at, _),
            child_server(serve, str(state), str(directories["blend"]), {}) as (blend_at, _),
        ):
            targets = {"plain": plain_at, "blend": blend_at}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    point = run_point(target, recommend_call(users), 1, 0.5, args.duration)
                    p50[name].append(point.p50_ms)
                    print(f"{name}: Recommend p50 {point.p50_ms:.3f} ms", flush=True)
        for name, values in p50.items():
            result["models"][name]["recommend_p50_ms_rounds"] = [round(v, 4) for v in values]
            result["models"][name]["recommend_p50_ms"] = round(float(np.median(values)), 4)
            for label, compiled in (("compiled", True), ("numpy", False)):
                result["models"][name][f"in_process_rank_p50_ms_{label}"] = round(
                    in_process_p50(directories[name], users, 400, compiled), 4
                )
    plain, blend = result["models"]["plain"], result["models"]["blend"]
    result["ratios"] = {
        "train_time": round(blend["train_s"] / plain["train_s"], 3),
        "train_time_by_round": [
            round(b / p, 3)
            for p, b in zip(plain["train_s_rounds"], blend["train_s_rounds"], strict=True)
        ],
        "train_time_target": "<= 1.5",
        "recommend_p50": round(
            float(
                np.median(
                    np.array(blend["recommend_p50_ms_rounds"])
                    / np.array(plain["recommend_p50_ms_rounds"])
                )
            ),
            3,
        ),
        "recommend_p50_of_medians": round(blend["recommend_p50_ms"] / plain["recommend_p50_ms"], 3),
        "recommend_p50_target": "<= 1.2",
        **{
            f"in_process_rank_p50_{label}": round(
                blend[f"in_process_rank_p50_ms_{label}"] / plain[f"in_process_rank_p50_ms_{label}"],
                3,
            )
            for label in ("compiled", "numpy")
        },
        "serving_arrays_bytes": round(
            blend["serving_arrays_bytes"] / plain["serving_arrays_bytes"], 3
        ),
    }
    print(json.dumps(result["ratios"], indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
