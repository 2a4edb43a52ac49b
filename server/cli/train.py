"""``shelfrank train``: a hybrid model from interaction (and feature) files."""

from __future__ import annotations

import argparse

from shelfrank.server.cli._errors import EXIT_OK
from shelfrank.server.cli._options import add_training_options, train_config
from shelfrank.server.cli._readers import read_features, read_interactions

NAME = "train"
HELP = "train a hybrid model from CSV/JSONL files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interactions", required=True)
    parser.add_argument("--items")
    parser.add_argument("--users")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--strict", action="store_true", help="the first bad row is fatal")
    parser.add_argument("--quiet", action="store_true")
    add_training_options(parser)


def run(args: argparse.Namespace) -> int:
    from shelfrank.server.hybrid import HybridModel

    config = train_config(args)
    interactions = read_interactions([args.interactions], args.strict, args.quiet)
    items = read_features(args.items, "item_id", args.strict, args.quiet)
    users = read_features(args.users, "user_id", args.strict, args.quiet)
    model = HybridModel.train(
        interactions, config, items=items, users=users, progress=not args.quiet
    )
    manifest = model.save(args.out)
    if not args.quiet:
        print(model.summary)
    print(f"model {manifest['model_version']} written to {args.out}")
    return EXIT_OK
