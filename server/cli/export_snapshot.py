"""``shelfrank export-snapshot``: a device (edge) snapshot from a model directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from shelfrank.server.cli._errors import EXIT_OK

NAME = "export-snapshot"
HELP = "a device snapshot from a model directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--user", default="", help="include this user's vector")
    parser.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> int:
    from shelfrank.core.snapshot import write_snapshot
    from shelfrank.edge.convert import snapshot_from_model_directory

    snapshot = snapshot_from_model_directory(Path(args.model), args.user)
    manifest = write_snapshot(args.out, snapshot)
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    print(
        f"snapshot {snapshot.version} ({len(snapshot)} items, {size:,} bytes) written to {args.out}"
    )
    return EXIT_OK
