"""Server memory with a large catalogue loaded (issue 5): RSS against the model's arrays.

Starts the real server (``shelfrank.server.app.start``, in a child process) on the trained
catalogue of each size, with the shop's catalogue, profiles and events in its store, and
reads the child's resident set (``VmRSS``) and peak (``VmHWM``) once it serves. The budget
is 2x the raw bytes of the model's arrays (everything in the model's .npz files, as loaded)
plus 300 MB.

    python benchmarks/memory.py [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import grpc
from catalogues import shape_for, trained_model
from grpc_health.v1 import health_pb2, health_pb2_grpc
from machine import machine_description
from serving import child_server, prepare_state, serve

from shelfrank.core.model_format import read_model_directory

MB = 1024 * 1024


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def raw_array_bytes(model_dir: Path) -> int:
    artifact = read_model_directory(model_dir)
    return sum(array.nbytes for group in artifact.groups.values() for array in group.values())


def measure(size: int) -> dict[str, Any]:
    shop, model_dir, _ = trained_model(shape_for(size))
    raw = raw_array_bytes(model_dir)
    with tempfile.TemporaryDirectory(prefix="shelfrank-memory-") as tmp:
        state_dir = Path(tmp) / "state"
        state_dir.mkdir()
        prepare_state(state_dir, shop)
        with child_server(serve, str(state_dir), str(model_dir), {}) as (target, pid):
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=30
                )
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError("server is not serving")
            rss = status_kb(pid, "VmRSS") * 1024
            peak = status_kb(pid, "VmHWM") * 1024
    budget = 2 * raw + 300 * MB
    return {
        "items": size,
        "raw_array_mb": round(raw / MB, 1),
        "rss_mb": round(rss / MB, 1),
        "peak_rss_mb": round(peak / MB, 1),
        "budget_mb": round(budget / MB, 1),
        "rss_over_budget": round(rss / budget, 3),
        "peak_over_budget": round(peak / budget, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--out", default="benchmarks/results/memory.json")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.sizes = "4000"
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.append(measure(size))
        print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine_description(), "target": "rss <= 2 x raw + 300 MB", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
