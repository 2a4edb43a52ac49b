"""``shelfrank synth``: a synthetic e-commerce data set written as CSV files."""

from __future__ import annotations

import argparse

from shelfrank.server.cli._errors import EXIT_OK
from shelfrank.server.cli._options import non_negative_int, positive_int

NAME = "synth"
HELP = "generate a synthetic e-commerce data set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=positive_int, required=True)
    parser.add_argument("--users", type=positive_int, required=True)
    parser.add_argument("--events", type=positive_int, required=True)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--shop",
        action="store_true",
        help="shop dynamics: repeat purchases of consumables, trends and launches, 180 days",
    )
    parser.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> int:
    from shelfrank.datasets.synth import SynthConfig, generate, write

    if args.shop:
        config = SynthConfig.shop(args.items, args.users, args.events, seed=args.seed)
    else:
        config = SynthConfig(items=args.items, users=args.users, events=args.events, seed=args.seed)
    data = generate(config)
    paths = write(data, args.out)
    print(
        f"{len(data.interactions)} events, {len(data.items)} items, {len(data.users)} users "
        f"written to {', '.join(str(p) for p in paths)}"
    )
    return EXIT_OK
