"""Serving latency and throughput of the real gRPC server (issue 5), measured in one run.

For each catalogue size: Recommend(k=10, exclude_seen default) for known users against the
gRPC health check on the same server (the floor), at client concurrency 1, 8 and 32; plus
the in-process baseline a user would otherwise write (``LightFM.predict`` over all items
and an argsort per request) against the server's scoring path (``ServingModel.rank``).

How the models are built: for every size, a real hybrid model trained on a synthetic shop
of that size (``benchmarks/catalogues.py``: 1,682 items as ml-100k; 100k items, 20k users,
400k events; 1M items, 100k users, 2M events; 64 components), cached between runs. Exact
scoring prunes with bounds that depend on the trained vectors' structure, so a copied or
random table would not measure it honestly. The shop's events are stored in the server's
SQLite store below the model's watermark, so ``exclude_seen`` has purchases and dismissals
to exclude, as in production.

The server runs in a child process (``shelfrank.server.app.start``; 16 worker threads,
reflection on, no token); the load generator runs in this process with one thread per
client, each with its own channel and its own connection (``grpc.use_local_subchannel_pool``).
Each point: a warm-up, then a fixed duration; latencies are per call, wall clock.

    python benchmarks/serving.py [--sizes 1682,100000[,1000000]] [--duration 3] [--smoke]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import pstats
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import scipy.sparse as sp
from catalogues import shape_for, trained_model  # benchmarks/catalogues.py
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lightfm import LightFM
from machine import machine_description  # benchmarks/machine.py

from shelfrank.client import Client
from shelfrank.core.events import EventType, StoredEvent
from shelfrank.core.ids import IdMap
from shelfrank.core.model_format import load_serving_model, save_model_directory
from shelfrank.core.scoring import ScoringTable
from shelfrank.core.serving import ServingModel, SparseRows
from shelfrank.datasets.synth import SynthConfig, SynthData, generate
from shelfrank.proto._generated import recommender_pb2 as pb
from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
from shelfrank.server.ann import SearchPolicy
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from shelfrank.server.registry import WATERMARK_KEY, load_state
from shelfrank.server.store import SQLiteStore

K = 10
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


# -- model and state ----------------------------------------------------------------------------
def train_base(items: int, users: int, events: int, epochs: int) -> tuple[SynthData, HybridModel]:
    shop = generate(SynthConfig(items=items, users=users, events=events, seed=5))
    config = TrainConfig(epochs=epochs, components=64, num_threads=2, seed=1)
    model = HybridModel.train(shop.interactions, config, items=shop.items, users=shop.users)
    return shop, model


def tiled(base: ServingModel, size: int, seed: int = 0) -> ServingModel:
    """``base`` with its item table tiled to ``size`` rows (first rows unchanged)."""
    n = len(base.items)
    if size == n:
        return base
    rng = np.random.default_rng(seed)
    rows = np.arange(size) % n
    extra = np.arange(size) >= n
    vectors = base.items.item_vectors[rows].copy()
    biases = base.items.item_biases[rows].copy()
    scale = float(vectors.std()) * 0.1
    vectors[extra] += rng.normal(0, scale, (int(extra.sum()), vectors.shape[1])).astype(np.float32)
    biases[extra] += rng.normal(0, scale, int(extra.sum())).astype(np.float32)
    ids = list(base.item_ids.ids) + [f"x{j:07d}" for j in range(n, size)]
    lengths = np.diff(base.item_tokens.indptr)[rows]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate([base.item_tokens.row(int(r)) for r in rows]).astype(np.int64)
    return ServingModel(
        items=ScoringTable(IdMap(ids), vectors, biases),
        item_tokens=SparseRows(indptr, indices),
        item_token_embeddings=base.item_token_embeddings,
        user_ids=base.user_ids,
        user_vectors=base.user_vectors,
        user_biases=base.user_biases,
        user_token_embeddings=base.user_token_embeddings,
        item_popularity=base.item_popularity[rows].copy(),
        seen=base.seen,
        fold_in=base.fold_in,
        model_version=f"{base.model_version}-x{size}",
    )


def prepare_state(state_dir: Path, shop: SynthData) -> int:
    """Store the shop's catalogue, profiles and events; returns the watermark."""
    store = SQLiteStore(state_dir / "events.sqlite3")
    try:
        store.upsert_items(list(shop.items.as_dict().items()))
        store.upsert_users(list(shop.users.as_dict().items()))
        it = shop.interactions
        store.append_events(
            [
                StoredEvent(event_id, user, item, EventType(int(kind)), int(stamp * 1000))
                for user, item, kind, stamp, event_id in zip(
                    it.user_ids,
                    it.item_ids,
                    it.event_types,
                    it.timestamps,
                    it.event_ids,
                    strict=True,
                )
            ]
        )
        return store.last_seq()
    finally:
        store.close()


def write_model(directory: Path, model: ServingModel, hybrid: HybridModel, watermark: int) -> None:
    save_model_directory(
        directory,
        model,
        metadata={
            "trained_at": "2026-01-01T00:00:00+00:00",
            "params": hybrid.config.to_json(),
            "training": {"interactions": int(hybrid.data.weights.nnz)},
            WATERMARK_KEY: watermark,
        },
    )


# -- server in a child process ------------------------------------------------------------------
def serve(state_dir: str, model_dir: str, overrides: dict[str, Any], ports: Any, stop: Any) -> None:
    """The real server (``app.start``) in this process until ``stop``; ``overrides`` are
    ServerOptions fields by name (``search`` given as a mode name)."""
    import logging

    from shelfrank.server.ann import SearchPolicy
    from shelfrank.server.app import ServerOptions, settle_serving_process, start

    logging.basicConfig(level=logging.WARNING)
    options = dict(overrides)
    if "search" in options:
        options["search"] = SearchPolicy(mode=options["search"])
    server_options = ServerOptions(
        state_dir=Path(state_dir),
        port=0,
        model_dir=Path(model_dir),
        grace_seconds=1.0,
        train_config=TrainConfig(num_threads=1),
        **options,
    )
    running = start(server_options)
    settle_serving_process(server_options)  # as `shelfrank serve` does
    ports.put(running.port)
    stop.wait()
    running.stop()


@contextmanager
def child_server(
    target: Callable[..., None], *args: Any, timeout: float = 1200
) -> Iterator[tuple[str, int]]:
    """Run ``target(*args, ports, stop)`` in a spawned child (it puts its port on ``ports``
    and serves until ``stop``); yields the address and the pid, and stops it after."""
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=target, args=(*args, ports, stop))
    child.start()
    try:
        port = ports.get(timeout=timeout)
        yield f"127.0.0.1:{port}", int(child.pid or 0)
    finally:
        stop.set()
        child.join(timeout=60)
        if child.is_alive():
            child.terminate()
            child.join()


# -- load generation ----------------------------------------------------------------------------
@dataclass
class Point:
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds

    def as_json(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "p50_ms": round(self.p50_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "mean_ms": round(self.mean_ms, 4),
            "throughput_per_s": round(self.throughput, 1),
        }


CallMaker = Callable[[grpc.Channel, int], Callable[[int], object]]


def health_call(channel: grpc.Channel, worker: int) -> Callable[[int], object]:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    return lambda i: stub.Check(request, timeout=10)


def recommend_call(users: list[str]) -> CallMaker:
    def make(channel: grpc.Channel, worker: int) -> Callable[[int], object]:
        stub = pb_grpc.RecommenderStub(channel)
        requests = [pb.RecommendRequest(user_id=u, k=K) for u in users]
        offset = worker * 7919
        return lambda i: stub.Recommend(requests[(i + offset) % len(requests)], timeout=10)

    return make


def run_point(
    target: str, make: CallMaker, concurrency: int, warmup: float, duration: float
) -> Point:
    channels = [grpc.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(concurrency)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=10)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)
    bounds: dict[str, float] = {}

    def worker(index: int) -> None:
        call = make(channels[index], index)
        out = latencies[index]
        barrier.wait()
        start, end = bounds["start"], bounds["end"]
        i = 0
        while True:
            tick = time.perf_counter()
            if tick >= end:
                break
            call(i)
            tock = time.perf_counter()
            if tick >= start:
                out.append(tock - tick)
            i += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    bounds["start"], bounds["end"] = now + warmup, now + warmup + duration
    barrier.wait()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    values = np.array([x for part in latencies for x in part]) * 1000
    return Point(
        calls=int(values.size),
        seconds=duration,
        p50_ms=float(np.percentile(values, 50)),
        p99_ms=float(np.percentile(values, 99)),
        mean_ms=float(values.mean()),
    )


def floor_points(
    target: str, users: list[str], concurrency: list[int], warmup: float, duration: float
) -> list[dict[str, Any]]:
    """Health (the floor) then Recommend at each concurrency, with their ratios."""
    points = []
    for c in concurrency:
        floor = run_point(target, health_call, c, warmup, duration)
        rec = run_point(target, recommend_call(users), c, warmup, duration)
        points.append(
            {
                "concurrency": c,
                "health": floor.as_json(),
                "recommend": rec.as_json(),
                "p50_ratio": round(rec.p50_ms / floor.p50_ms, 3),
                "throughput_ratio": round(rec.throughput / floor.throughput, 3),
            }
        )
    return points


def sdk_overhead(target: str, users: list[str], warmup: float, duration: float) -> dict[str, Any]:
    """Client.recommend against the raw stub, concurrency 1, alternating halves."""
    raw = recommend_call(users)
    with Client(target, timeout=10) as client:

        def sdk(channel: grpc.Channel, worker: int) -> Callable[[int], object]:
            return lambda i: client.recommend(users[i % len(users)], k=K)

        points = {
            "raw_stub": run_point(target, raw, 1, warmup, duration / 2),
            "sdk_client": run_point(target, sdk, 1, warmup, duration / 2),
        }
    result: dict[str, Any] = {name: p.as_json() for name, p in points.items()}
    result["sdk_minus_raw_p50_ms"] = round(
        points["sdk_client"].p50_ms - points["raw_stub"].p50_ms, 4
    )
    return result


# -- in-process: LightFM baseline against ServingModel.rank -------------------------------------
def lightfm_for(model: ServingModel) -> LightFM:
    """A LightFM with identity features whose predictions are the serving model's scores."""
    lightfm = LightFM(no_components=model.items.dim)
    lightfm.item_embeddings = model.items.item_vectors.copy()
    lightfm.item_biases = model.items.item_biases.copy()
    lightfm.user_embeddings = model.user_vectors.copy()
    lightfm.user_biases = model.user_biases.copy()
    for side in ("item", "user"):
        for part, plural in (("embedding", "embeddings"), ("bias", "biases")):
            shape = getattr(lightfm, f"{side}_{plural}").shape
            setattr(lightfm, f"{side}_{part}_gradients", np.ones(shape, np.float32))
            setattr(lightfm, f"{side}_{part}_momentum", np.zeros(shape, np.float32))
    return lightfm


def in_process(model: ServingModel, users: list[str], calls: int) -> dict[str, Any]:
    n_items, n_users = len(model.items), len(model.user_ids)
    lightfm = lightfm_for(model)
    item_features = sp.identity(n_items, dtype=np.float32, format="csr")
    user_features = sp.identity(n_users, dtype=np.float32, format="csr")
    all_items = np.arange(n_items, dtype=np.int32)

    def baseline(user: str) -> np.ndarray:
        row = model.user_ids.index(user)
        scores = lightfm.predict(
            np.full(n_items, row, np.int32),
            all_items,
            user_features=user_features,
            item_features=item_features,
            num_threads=1,
        )
        return np.argsort(-scores)[:K]

    def ours(user: str) -> np.ndarray:
        vector = model.user_vector(user)
        return model.rank(vector, K, exclude=model.seen_rows(user)).indices

    def timed(fn: Callable[[str], np.ndarray]) -> list[float]:
        for user in users[:3]:
            fn(user)
        out = []
        for i in range(calls):
            tick = time.perf_counter()
            fn(users[i % len(users)])
            out.append(time.perf_counter() - tick)
        return out

    agree = sum(
        len(set(baseline(u).tolist()) & set(model.rank(model.user_vector(u), K).indices.tolist()))
        for u in users[:20]
    ) / (20 * K)
    # Ours as the server runs it (SearchPolicy: compiled pruned search), and the numpy
    # search of shelfrank.core alone; the same rows either way.
    kernel = model.items.kernel
    model.items.kernel = None
    numpy_t = timed(ours)
    SearchPolicy().prepare(model.items)
    base_t, ours_t = timed(baseline), timed(ours)
    model.items.kernel = kernel
    base_ms, ours_ms = np.median(base_t) * 1000, np.median(ours_t) * 1000
    return {
        "calls": calls,
        "lightfm_predict_argsort_median_ms": round(float(base_ms), 4),
        "serving_model_rank_median_ms": round(float(ours_ms), 4),
        "numpy_search_rank_median_ms": round(float(np.median(numpy_t) * 1000), 4),
        "speedup": round(float(base_ms / ours_ms), 1),
        "top10_overlap_without_exclusions": round(agree, 3),
        "note": "baseline: identity features, no seen-item exclusion, 1 thread; "
        "ours: user_vector + rank with the training seen-items excluded, search as the "
        "server runs it (compiled pruned search above 20k items); numpy: the same with "
        "core's numpy search",
    }


def profile_handler(state_dir: Path, model_dir: Path, users: list[str], calls: int) -> dict:
    """The server's Recommend handler in-process (servicer, no transport), under cProfile."""
    from shelfrank.server.grpc_servicer import RecommenderServicer
    from shelfrank.server.service import RecommenderService

    store = SQLiteStore(state_dir / "events.sqlite3")
    try:
        servicer = RecommenderServicer(RecommenderService(store, load_state(model_dir)))
        requests = [pb.RecommendRequest(user_id=u, k=K) for u in users]
        for request in requests:  # same warm state as the server: live records, vector cache
            servicer.Recommend(request, None)  # type: ignore[arg-type]
        tick = time.perf_counter()
        for i in range(calls):
            servicer.Recommend(requests[i % len(requests)], None)  # type: ignore[arg-type]
        per_call_ms = (time.perf_counter() - tick) / calls * 1000
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(calls):
            servicer.Recommend(requests[i % len(requests)], None)  # type: ignore[arg-type]
        profiler.disable()
    finally:
        store.close()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(8)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return {
        "calls": calls,
        "handler_mean_ms_unprofiled": round(per_call_ms, 4),
        "top_by_tottime": lines[start : start + 9],
    }


# -- report -------------------------------------------------------------------------------------
def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, entry in zip(axes[0], sizes, strict=True):
        conc = [p["concurrency"] for p in entry["points"]]
        for method, color in (("health", "tab:gray"), ("recommend", "tab:blue")):
            ax.plot(conc, [p[method]["p50_ms"] for p in entry["points"]], "o-", color=color,
                    label=f"{method} p50")  # fmt: skip
            ax.plot(conc, [p[method]["p99_ms"] for p in entry["points"]], "x--", color=color,
                    alpha=0.6, label=f"{method} p99")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.set_yscale("log")
        ax.set_xlabel("client concurrency (threads)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{entry['items']:,} items, 64 dims")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| items | conc | Health p50 / p99 ms | Health calls/s | Recommend p50 / p99 ms "
        "| Recommend calls/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in result["sizes"]:
        for p in entry["points"]:
            h, r = p["health"], p["recommend"]
            lines.append(
                f"| {entry['items']:,} | {p['concurrency']} "
                f"| {h['p50_ms']:.2f} / {h['p99_ms']:.2f} "
                f"| {h['throughput_per_s']:,.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} "
                f"| {r['throughput_per_s']:,.0f} |"
            )
    lines += [
        "",
        "| items | Rec p50 / Health p50 (c=1) | Rec / Health throughput (c=max) "
        "| LightFM.predict+argsort ms | ServingModel.rank ms | speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in result["sizes"]:
        ratios, base = entry["ratios"], entry["in_process"]
        lines.append(
            f"| {entry['items']:,} | {ratios['p50_ratio_c1']:.2f}x | "
            f"{ratios['throughput_ratio_cmax']:.0%} | "
            f"{base['lightfm_predict_argsort_median_ms']:.2f} | "
            f"{base['serving_model_rank_median_ms']:.3f} | {base['speedup']:.0f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", default="1682,100000", help="catalogue sizes, e.g. 1682,100000,1000000"
    )
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per point")
    parser.add_argument("--users", type=int, default=500, help="known users cycled through")
    parser.add_argument("--inproc-calls", type=int, default=60)
    parser.add_argument("--smoke", action="store_true", help="tiny run in a few seconds")
    parser.add_argument(
        "--search", choices=("auto", "exact", "ann"), default="auto", help="server search policy"
    )
    parser.add_argument("--out", default="benchmarks/results/serving.json")
    parser.add_argument("--plot", default="benchmarks/results/serving.png")
    args = parser.parse_args()

    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.smoke:
        sizes, concurrency = [400, 4000], [1, 4]
        args.duration, args.warmup, args.users, args.inproc_calls = 0.3, 0.1, 50, 10

    result: dict[str, Any] = {
        "machine": machine_description(),
        "settings": {
            "catalogues": {
                str(size): {**asdict(shape_for(size)), "components": 64, "synth_seed": 5}
                for size in sizes
            },
            "catalogue": "one hybrid LightFM model trained per size on a synthetic shop of "
            "that size (benchmarks/catalogues.py), cached between runs",
            "k": K,
            "exclude_seen": "default (true); the shop's events are stored below the model's "
            "watermark, so purchases and dismissals are excluded as in production",
            "known_users_cycled": args.users,
            "concurrency": concurrency,
            "clients": "one thread per client, each with its own channel and connection, "
            "load generator in the parent process, server in a child process (16 workers)",
            "warmup_s": args.warmup,
            "duration_s_per_point": args.duration,
            "smoke": args.smoke,
            "search": args.search,
        },
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="shelfrank-serving-") as tmp:
        for size in sizes:
            tick = time.perf_counter()
            shop, model_dir, timings = trained_model(shape_for(size))
            state_dir = Path(tmp) / f"state-{size}"
            state_dir.mkdir()
            watermark = prepare_state(state_dir, shop)
            if watermark != len(shop.interactions):
                raise RuntimeError(f"store watermark {watermark} != {len(shop.interactions)}")
            model, _ = load_serving_model(model_dir)
            users = list(model.user_ids.ids)[: args.users]
            setup_s = time.perf_counter() - tick
            overrides = {"search": args.search}
            with child_server(serve, str(state_dir), str(model_dir), overrides) as (target, _):
                points = floor_points(target, users, concurrency, args.warmup, args.duration)
                for point in points:
                    health, rec = point["health"], point["recommend"]
                    print(
                        f"{size} items c={point['concurrency']}: health p50 "
                        f"{health['p50_ms']:.2f} ms {health['throughput_per_s']:.0f}/s, recommend "
                        f"p50 {rec['p50_ms']:.2f} ms {rec['throughput_per_s']:.0f}/s",
                        flush=True,
                    )
                sdk = sdk_overhead(target, users, args.warmup, args.duration)
            first, last = points[0], points[-1]
            entry = {
                "items": size,
                "users": len(model.user_ids),
                "dims": model.items.dim,
                "setup_s": round(setup_s, 2),
                "catalogue_timings": timings,
                "points": points,
                "ratios": {
                    "p50_ratio_c1": round(
                        first["recommend"]["p50_ms"] / first["health"]["p50_ms"], 3
                    ),
                    "throughput_ratio_cmax": round(
                        last["recommend"]["throughput_per_s"] / last["health"]["throughput_per_s"],
                        3,
                    ),
                    "cmax": last["concurrency"],
                },
                "sdk_overhead_c1": sdk,
                "in_process": in_process(model, users, args.inproc_calls),
                "handler_profile": profile_handler(
                    state_dir, model_dir, users, max(20, args.inproc_calls * 5)
                ),
            }
            result["sizes"].append(entry)
    at_target = [e for e in result["sizes"] if e["items"] == 100_000]
    if at_target:
        e = at_target[0]
        result["targets_at_100k"] = {
            "p50_ratio_c1": {"value": e["ratios"]["p50_ratio_c1"], "target": "<= 2.0"},
            "throughput_ratio_c32": {
                "value": e["ratios"]["throughput_ratio_cmax"],
                "target": ">= 0.5",
            },
            "in_process_speedup": {"value": e["in_process"]["speedup"], "target": ">= 10"},
        }
    result["total_runtime_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    plot(result, Path(args.plot))
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
