"""``shelfrank import-movielens``: a MovieLens-100k folder as the import CSV files."""

from __future__ import annotations

import argparse
from pathlib import Path

from shelfrank.server.cli._errors import EXIT_OK, CommandError
from shelfrank.server.cli._readers import report_rows

NAME = "import-movielens"
HELP = "convert a MovieLens-100k folder to CSVs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--strict", action="store_true")


def run(args: argparse.Namespace) -> int:
    from shelfrank.datasets import movielens, write_features, write_interactions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_features(out / "items.csv", movielens.read_items(args.dir))
    write_features(out / "users.csv", movielens.read_users(args.dir))
    rating_files = movielens.available_rating_files(args.dir)
    if not rating_files:
        raise CommandError(f"{args.dir}: no MovieLens rating files (u.data, ua.base, ...)")
    for path in rating_files:
        table, report = movielens.read_ratings(path, strict=args.strict)
        report_rows(report, quiet=True)
        write_interactions(out / f"{path.name}.csv", table)
    print(f"items.csv, users.csv and {len(rating_files)} interaction files written to {out}")
    return EXIT_OK
