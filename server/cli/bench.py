"""``shelfrank bench``: the scripts in benchmarks/ of a source checkout, one by one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from shelfrank.server.cli._errors import EXIT_OK, CommandError

NAME = "bench"
HELP = "run the benchmarks (benchmarks/ of a source checkout; JSON, plots)"

# name -> (script in benchmarks/, extra arguments given the output directory)
BENCHMARKS: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
    "serving": (
        "serving.py",
        lambda out: ["--out", str(out / "serving.json"), "--plot", str(out / "serving.png")],
    ),
    "concurrency": ("concurrency_model.py", lambda out: ["--out", str(out / "concurrency.json")]),
    "ann": ("ann_compare.py", lambda out: ["--out", str(out / "ann_compare.json")]),
    "ingest": (
        "ingest.py",
        lambda out: ["--out", str(out / "ingest.json"), "--plot", str(out / "ingest.png")],
    ),
    "hot-swap": ("hot_swap.py", lambda out: ["--out", str(out / "hot_swap.json")]),
    "memory": ("memory.py", lambda out: ["--out", str(out / "memory.json")]),
    "train-time": ("train_time.py", lambda out: ["--out", str(out / "train_time.json")]),
    "bandwagon": ("bandwagon.py", lambda out: ["--out", str(out / "bandwagon.json")]),
    "overload": ("overload.py", lambda out: ["--out", str(out / "overload.json")]),
    "edge": ("edge_bench.py", lambda out: ["--out", str(out / "edge.json")]),
    "blend-cost": ("blend_cost.py", lambda out: ["--out", str(out / "blend_cost.json")]),
    "replicas": ("replicas.py", lambda out: ["--out", str(out / "replicas.json")]),
    "ranking-pipeline": (
        "ranking_pipeline.py",
        lambda out: ["--out", str(out / "ranking_pipeline.json")],
    ),
    "feedback-loop": ("feedback_loop.py", lambda out: ["--out", str(out / "feedback_loop.json")]),
    "dashboard": ("dashboard.py", lambda out: ["--out", str(out / "dashboard.json")]),
}
# benchmarks/ beside the source folders (server/cli/ is two levels below the checkout)
BENCHMARK_FOLDER = Path(__file__).resolve().parents[2] / "benchmarks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"some of: {', '.join(BENCHMARKS)} (default all)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds each (CI)")
    parser.add_argument("--out-dir", default="benchmarks/results")


def run(args: argparse.Namespace) -> int:
    import subprocess

    folder = BENCHMARK_FOLDER
    if not (folder / "serving.py").exists():
        raise CommandError(
            f"{folder}: no benchmarks here; run `shelfrank bench` from a source checkout "
            "installed with `pip install -e .[dev]`"
        )
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise CommandError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        script, extra = BENCHMARKS[name]
        command = [sys.executable, str(folder / script), *extra(out)]
        if args.smoke:
            command.append("--smoke")
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        if subprocess.run(command, cwd=folder.parent, check=False).returncode != 0:
            raise CommandError(f"benchmark {name} failed")
    print(f"results in {out}/")
    return EXIT_OK
