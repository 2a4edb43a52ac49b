"""Edge SDK size and speed, measured in one run (issue 4).

    python benchmarks/edge_bench.py [--items 100000] [--dim 64] [--out benchmarks/results/edge.json]

1. Rerank of 500 candidates with a 20-event session, in-process: p50/p99 over repeats.
2. An int8 snapshot of ITEMS x DIM: file bytes, and top-10 overlap against float32 scoring
   for 200 random users (vectors from a low-rank model so scores have real structure).
3. A delta after 1% of the items changed: delta bytes / full snapshot bytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine_description  # benchmarks/machine.py

from shelfrank.core.events import EventType
from shelfrank.core.ids import IdMap
from shelfrank.core.serving import SparseRows
from shelfrank.core.session import SessionConfig, SessionEvent, rerank
from shelfrank.core.snapshot import build_snapshot, dequantize, diff, write_delta, write_snapshot


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/edge.json")
    parser.add_argument("--smoke", action="store_true", help="5,000 items, 100 repeats")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.repeats = 5_000, 100
    rng = np.random.default_rng(0)
    n, d = args.items, args.dim
    # LightFM-like vectors: low-rank structure plus noise, popularity in the norms/biases.
    basis = rng.normal(size=(16, d)).astype(np.float32)
    vectors = (
        rng.normal(size=(n, 16)).astype(np.float32) @ basis
        + 0.3 * rng.normal(size=(n, d)).astype(np.float32)
    ) / 4
    biases = rng.normal(0, 0.5, n).astype(np.float32)
    ids = IdMap(f"i{i:07d}" for i in range(n))
    tokens = SparseRows(np.zeros(n + 1, np.int64), np.empty(0, np.int64))
    user = (rng.normal(size=16).astype(np.float32) @ basis) / 4

    # 1. rerank latency
    candidates = rng.choice(n, 500, replace=False).astype(np.int64)
    events = [
        SessionEvent(int(r), EventType.VIEW, 1000.0 + i)
        for i, r in enumerate(rng.choice(n, 20, replace=False))
    ]
    table = vectors[np.union1d(candidates, [e.row for e in events])]
    needed = np.union1d(candidates, [e.row for e in events])
    local_candidates = np.searchsorted(needed, candidates)
    local_events = [
        SessionEvent(int(np.searchsorted(needed, e.row)), e.event_type, e.timestamp) for e in events
    ]
    base = table[local_candidates] @ user + biases[candidates]
    config = SessionConfig()
    timings = []
    for _ in range(args.repeats):
        tick = time.perf_counter()
        rerank(local_candidates, base, table, local_events, 1100.0, config)
        timings.append(time.perf_counter() - tick)
    timings.sort()
    rerank_p50_us = statistics.median(timings) * 1e6
    rerank_p99_us = timings[int(len(timings) * 0.99)] * 1e6

    # 2. int8 snapshot size and fidelity
    snapshot = build_snapshot(
        "v1", "m1", ids, vectors, biases, np.zeros(n, np.float32), IdMap(), tokens
    )
    with tempfile.TemporaryDirectory() as scratch:
        write_snapshot(Path(scratch) / "full", snapshot)
        full_bytes = folder_bytes(Path(scratch) / "full")
        approx = dequantize(snapshot.vectors, snapshot.scales)
        overlaps = []
        for _ in range(200):
            u = (rng.normal(size=16).astype(np.float32) @ basis) / 4
            exact = np.argpartition(-(vectors @ u + biases), 10)[:10]
            quick = np.argpartition(-(approx @ u + biases), 10)[:10]
            overlaps.append(len(set(exact.tolist()) & set(quick.tolist())) / 10)

        # 3. delta after 1% of items changed
        changed = rng.choice(n, n // 100, replace=False)
        vectors2 = vectors.copy()
        vectors2[changed] += 0.1 * rng.normal(size=(changed.size, d)).astype(np.float32)
        snapshot2 = build_snapshot(
            "v2", "m2", ids, vectors2, biases, np.zeros(n, np.float32), IdMap(), tokens
        )
        delta = diff(snapshot, snapshot2)
        write_delta(Path(scratch) / "delta", delta)
        delta_bytes = folder_bytes(Path(scratch) / "delta")

    result = {
        "machine": machine_description(),
        "items": n,
        "dim": d,
        "rerank_500_candidates_p50_us": round(rerank_p50_us, 1),
        "rerank_500_candidates_p99_us": round(rerank_p99_us, 1),
        "rerank_target_p50_us": 200,
        "int8_snapshot_bytes": full_bytes,
        "int8_snapshot_target_bytes": 8 * 1024 * 1024,
        "float32_vectors_bytes": int(vectors.nbytes),
        "top10_overlap_int8_vs_float32_mean": round(float(np.mean(overlaps)), 4),
        "top10_overlap_target": 0.95,
        "delta_rows": len(delta.upserts),
        "delta_bytes": delta_bytes,
        "delta_fraction_of_full": round(delta_bytes / full_bytes, 4),
        "delta_target_fraction": 0.05,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
