"""Trained synthetic catalogues for the benchmarks, cached on disk between runs.

Each size is a real hybrid LightFM model trained on a synthetic shop of that size
(``shelfrank.datasets.synth``, 64 components), not a copy of a smaller table: pruning and
approximate search depend on the structure of real trained vectors, so the benchmarks
measure on them. Training the 1M catalogue takes minutes, so the model directory is kept
in ``benchmarks/.cache`` (or ``$SHELFRANK_BENCH_CACHE``) keyed by every setting; the shop
itself is regenerated (a pure function of its config, seconds).

    python benchmarks/catalogues.py 100000 1000000    # train and cache ahead of time
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from shelfrank.core.model_format import save_model_directory
from shelfrank.datasets.synth import SynthConfig, SynthData, generate
from shelfrank.server.config import TrainConfig
from shelfrank.server.registry import WATERMARK_KEY

CACHE = Path(os.environ.get("SHELFRANK_BENCH_CACHE", Path(__file__).parent / ".cache"))


@dataclass(frozen=True)
class Shape:
    items: int
    users: int
    events: int
    epochs: int

    def synth(self) -> SynthConfig:
        return SynthConfig(items=self.items, users=self.users, events=self.events, seed=5)

    def train_config(self) -> TrainConfig:
        # The ridge cold-start map is fitted on every item's tokens; above 100k items it
        # would dominate the benchmark set-up, and cold items are not what is measured.
        cold = "ridge" if self.items <= 20_000 else "lightfm"
        return TrainConfig(
            epochs=self.epochs, components=64, num_threads=2, seed=1, item_cold_start=cold
        )


SHAPES = {
    1682: Shape(1682, 943, 100_000, 2),  # the size of ml-100k
    100_000: Shape(100_000, 20_000, 400_000, 10),
    1_000_000: Shape(1_000_000, 100_000, 2_000_000, 5),
}


def shape_for(items: int) -> Shape:
    """The registered shape, or one scaled from the ml-100k-sized one."""
    if items in SHAPES:
        return SHAPES[items]
    return Shape(items, max(50, items // 2), max(2_000, items * 20), 2)


def trained_model(shape: Shape, *, quiet: bool = False) -> tuple[SynthData, Path, dict[str, float]]:
    """The shop and a cached model directory (watermark = every shop event)."""
    key = hashlib.sha256(
        json.dumps([asdict(shape), shape.train_config().to_json(), 1], sort_keys=True).encode()
    ).hexdigest()[:12]
    directory = CACHE / f"model-{shape.items}-{key}"
    tick = time.perf_counter()
    shop = generate(shape.synth())
    timings = {"generate_s": round(time.perf_counter() - tick, 2)}
    if not (directory / "manifest.json").exists():
        from shelfrank.server.hybrid import HybridModel

        if not quiet:
            print(f"training the {shape.items:,}-item catalogue (cached after)", flush=True)
        tick = time.perf_counter()
        hybrid = HybridModel.train(
            shop.interactions, shape.train_config(), items=shop.items, users=shop.users
        )
        timings["train_s"] = round(time.perf_counter() - tick, 2)
        staging = directory.with_name(directory.name + ".tmp")
        save_model_directory(
            staging,
            hybrid.to_serving(),
            metadata={
                "trained_at": "2026-01-01T00:00:00+00:00",
                "params": hybrid.config.to_json(),
                "training": {"interactions": int(hybrid.data.weights.nnz)},
                WATERMARK_KEY: len(shop.interactions),
            },
        )
        staging.rename(directory)
    return shop, directory, timings


if __name__ == "__main__":
    for size in sys.argv[1:]:
        _, path, took = trained_model(shape_for(int(size)))
        print(path, took)


def ml100k_model(folder: Path) -> Path:
    """The hybrid model on ml-100k's ua.base with the default settings (cached)."""
    import shutil
    from dataclasses import replace

    from shelfrank.datasets import movielens
    from shelfrank.server.hybrid import HybridModel

    directory = CACHE / "ml100k-ua-default"
    if not (directory / "manifest.json").exists():
        train, _ = movielens.read_ratings(folder / "ua.base")
        config = replace(TrainConfig(), seed=1, num_threads=1, validation_split="random")
        hybrid = HybridModel.train(
            train, config, items=movielens.read_items(folder), users=movielens.read_users(folder)
        )
        staging = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        hybrid.save(staging)
        staging.rename(directory)
    return directory


def latency_model_for(ml100k: Path, *, smoke: bool) -> tuple[Path, str]:
    """The model latency benchmarks serve and its name: MovieLens-100k's (default
    settings) where the data is present, else (and for a smoke run) a small synthetic shop."""
    if smoke or not (ml100k / "ua.base").is_file():
        _, model, _ = trained_model(Shape(600, 300, 6_000, 2), quiet=True)
        return model, "synthetic shop, 600 items"
    return ml100k_model(ml100k), "MovieLens-100k ua, default settings"
