"""``shelfrank demo``: the offline pipeline on synthetic demo data."""

from __future__ import annotations

import argparse
from pathlib import Path

from shelfrank.server.cli._errors import EXIT_OK

NAME = "demo"
HELP = "the offline pipeline on synthetic demo data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-out")


def run(args: argparse.Namespace) -> int:
    from shelfrank.server.demo import run_demo

    run_demo(Path(args.out))
    return EXIT_OK
