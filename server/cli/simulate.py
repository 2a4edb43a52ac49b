"""``shelfrank simulate``: synthetic shoppers with hidden tastes browse a server through
the SDK, react to what they are shown, and the server learns from it (server/simulate.py).

With ``--target`` it drives a running server (which must retrain on an interval); without,
it starts one on a free loopback port over ``--state`` with a hybrid-vs-popularity
experiment (``--split``) and ``--retrain-interval``, and stops it at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from shelfrank.server.cli._errors import EXIT_OK
from shelfrank.server.cli._options import positive_int
from shelfrank.server.simulate import SimulationConfig

if TYPE_CHECKING:
    from shelfrank.client import FeedbackReport
    from shelfrank.server.app import RunningServer

NAME = "simulate"
HELP = "simulated shoppers against a server: the feedback loop end to end"

EXPERIMENT = "simulation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="a running server, host:port")
    where.add_argument("--state", help="start a server over this (new) state directory")
    parser.add_argument("--token", help="the server's bearer token, if it has one")
    parser.add_argument("--shoppers", type=positive_int, default=2_000)
    parser.add_argument("--items", type=positive_int, default=1_000)
    parser.add_argument("--history-events", type=positive_int, default=2_000)
    parser.add_argument("--rounds", type=positive_int, default=4)
    parser.add_argument("--k", type=positive_int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--click-scale",
        type=float,
        default=SimulationConfig.click_scale,
        help="click probability of an examined item the shopper likes best (0..1)",
    )
    parser.add_argument(
        "--split",
        type=positive_int,
        default=50,
        help="with --state: percent of shoppers served by the hybrid model; the rest get "
        "the popularity baseline",
    )
    parser.add_argument(
        "--retrain-interval",
        type=float,
        default=5.0,
        help="with --state: the server's retraining interval (seconds)",
    )
    parser.add_argument("--experiment", default="", help="report only this experiment")
    parser.add_argument("--json", metavar="FILE", help="write rounds and report as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from shelfrank.client import Client
    from shelfrank.server.cli._errors import CommandError
    from shelfrank.server.simulate import Simulator

    config = SimulationConfig(
        shoppers=args.shoppers,
        items=args.items,
        history_events=args.history_events,
        rounds=args.rounds,
        k=args.k,
        seed=args.seed,
        click_scale=args.click_scale,
    )
    if not 1 <= args.split <= 99:
        raise CommandError("--split: a percent from 1 to 99")
    server = None
    target = args.target
    if target is None:
        server = _start(Path(args.state), args.split, args.retrain_interval)
        target = f"127.0.0.1:{server.port}"
    try:
        with Client(target, token=args.token) as client:
            result = Simulator(client, config, progress=True).run(args.experiment)
    finally:
        if server is not None:
            server.stop()
    print(result.table())
    if result.report is not None:
        print()
        print(report_table(result.report))
    if args.json:
        payload = result.to_json()
        payload["report"] = None if result.report is None else json.loads(result.report.json)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    if args.state:
        print(f"the store is kept: shelfrank report --state {args.state} --plot FILE draws it")
    return EXIT_OK


def report_table(report: FeedbackReport) -> str:
    """The GetReport answer as the terminal shows it."""
    lines: list[str] = []
    for experiment in report.experiments:
        lines.append(f"experiment {experiment.name}")
        for v in experiment.variants:
            lines.append(
                f"  {v.name:12} impressions {v.impressions:7d}  clicks {v.clicks:6d}  "
                f"CTR {v.ctr.value:.4f} [{v.ctr.low:.4f}, {v.ctr.high:.4f}]  "
                f"conversion {v.conversion.value:.4f} "
                f"[{v.conversion.low:.4f}, {v.conversion.high:.4f}]"
            )
        for c in experiment.comparisons:
            lines.append(
                f"  {c.metric}: {c.variant} - {c.control} = {c.difference:+.4f} "
                f"[{c.low:+.4f}, {c.high:+.4f}], always valid "
                f"[{c.always_valid_low:+.4f}, {c.always_valid_high:+.4f}], "
                f"p {c.p_value:.3g}: {c.verdict}"
            )
    return "\n".join(lines)


def experiment_file(split: int) -> str:
    """The hybrid-vs-popularity experiment the embedded server runs."""
    return (
        f'[[experiment]]\nname = "{EXPERIMENT}"\ncontrol = "popularity"\n'
        f'[[experiment.variant]]\nname = "hybrid"\nshare = {split}\nsetting = "hybrid"\n'
        f'[[experiment.variant]]\nname = "popularity"\nshare = {100 - split}\n'
        'setting = "popularity"\n'
    )


def _start(directory: Path, split: int, retrain_interval: float) -> RunningServer:
    from shelfrank.server.app import ServerOptions, start
    from shelfrank.server.cli._errors import CommandError

    if directory.exists() and any(directory.iterdir()):
        raise CommandError(f"--state: {directory} is not empty; give a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    experiments = directory / "experiments.toml"
    experiments.write_text(experiment_file(split))
    return start(
        ServerOptions(
            state_dir=directory,
            port=0,
            experiments=experiments,
            retrain_interval_seconds=retrain_interval,
            first_model_events=1,
            first_model_users=1,
        )
    )
