"""``shelfrank evaluate``: an offline protocol, the hybrid model against baselines."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shelfrank.server.cli._errors import EXIT_OK, CommandError
from shelfrank.server.cli._options import (
    add_training_options,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
    share,
    train_config,
)
from shelfrank.server.cli._readers import read_features, read_interactions
from shelfrank.server.evaluation.protocols import FAIRNESS_PROTOCOLS, NEEDS_TEST, PROTOCOLS

if TYPE_CHECKING:
    from shelfrank.server.evaluation.fairness import FairnessSettings
    from shelfrank.server.evaluation.runner import EvaluationReport
    from shelfrank.server.storage import EventStore

NAME = "evaluate"
HELP = "offline evaluation against baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS)
    parser.add_argument(
        "--interactions",
        required=True,
        action="append",
        help="training (or whole) interactions; repeat to concatenate files",
    )
    parser.add_argument(
        "--test", action="append", help="test interactions (given, fold-in, tradeoffs)"
    )
    parser.add_argument("--items")
    parser.add_argument("--users")
    parser.add_argument("--k", type=positive_int, default=10)
    parser.add_argument(
        "--relevant",
        default="positive",
        help="test event types that count as relevant: 'positive' or a list "
        "like 'purchase,add_to_cart'",
    )
    parser.add_argument(
        "--models",
        help="comma list (default: hybrid,lightfm-cf,popularity,user-knn; with temporal: "
        "shelfrank,hybrid-lightfm,lightfm-cf,popularity-recent,bought-most,ease,user-knn)",
    )
    parser.add_argument(
        "--test-days", type=positive_float, help="temporal: the last N days are the test"
    )
    parser.add_argument(
        "--recent-days",
        type=positive_float,
        default=30.0,
        help="temporal: window of the recent-popularity baseline",
    )
    parser.add_argument("--test-fraction", type=fraction, default=0.2)
    parser.add_argument(
        "--item-fraction",
        type=fraction,
        default=0.2,
        help="cold-items, tradeoffs: share of items held out",
    )
    parser.add_argument("--fold-users", type=positive_int, default=100)
    parser.add_argument("--split-seed", type=non_negative_int, default=0)
    parser.add_argument("--json", help="also write the report as JSON to this file ('-': stdout)")
    parser.add_argument(
        "--plot",
        help="write a PNG bar chart of the metrics (tradeoffs: the two curves)",
    )
    parser.add_argument(
        "--save-to",
        metavar="STORE",
        help="also store the report (report.json) and its PNG charts in this store (a "
        "server's state directory or a postgresql:// URL; $SHELFRANK_STORE is not read) "
        "as the evaluation <UTC yyyymmddTHHMMSSZ>-<protocol>, for the dashboard",
    )
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    _add_fairness_options(parser)
    _add_tradeoff_options(parser)
    add_training_options(parser)


def _add_fairness_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "fairness and beyond accuracy",
        "per user group P@k and NDCG@k with their gaps, exposure Gini, coverage, novelty and "
        "intra-list diversity per model (server/evaluation/fairness.py); any of these "
        "options turns them on (not with edge-replay)",
    )
    group.add_argument(
        "--fairness",
        action="store_true",
        help="group by every column of --users; item metrics on every column of --items",
    )
    group.add_argument(
        "--group-by",
        action="append",
        metavar="COLUMN",
        help="a user column to group users by, e.g. gender (repeatable; default: every "
        "column of --users)",
    )
    group.add_argument(
        "--exposure-by",
        action="append",
        metavar="COLUMN",
        help="an item column, e.g. genre, whose values' share of recommended slots is set "
        "against their share of the catalogue and of training interactions (repeatable)",
    )
    group.add_argument(
        "--diversity-by",
        action="append",
        metavar="COLUMN",
        help="an item column whose tokens intra-list diversity compares (repeatable; "
        "default: every column of --items; also the tradeoffs protocol's Jaccard ILD)",
    )


def _add_tradeoff_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "tradeoffs",
        "--protocol tradeoffs: P@k and intra-list diversity against the diversity setting, "
        "P@k and cold items' share of the slots against the exploration share "
        "(server/evaluation/tradeoffs.py); needs --test and --items",
    )
    group.add_argument(
        "--diversity-sweep",
        type=share_list,
        metavar="D,D,...",
        help="diversity settings (default 0,0.1,...,0.8; 0 is always included)",
    )
    group.add_argument(
        "--exploration-sweep",
        type=share_list,
        metavar="E,E,...",
        help="exploration shares (default 0,0.05,0.1,0.2,0.3; 0 is always included)",
    )


def share_list(text: str) -> tuple[float, ...]:
    """A comma list of numbers in [0, 1]."""
    values = tuple(share(part.strip()) for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected numbers in [0, 1], got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from shelfrank.server.evaluation.protocols import ProtocolSettings, run_protocol
    from shelfrank.server.evaluation.runner import parse_relevant

    needs_test = args.protocol in NEEDS_TEST
    if needs_test and not args.test:
        raise CommandError(f"--test is required with --protocol {args.protocol}")
    if not needs_test and args.test:
        raise CommandError(f"--test is not used by --protocol {args.protocol}")
    tradeoffs = args.protocol == "tradeoffs"
    if not tradeoffs and (args.diversity_sweep or args.exploration_sweep):
        raise CommandError(
            "--diversity-sweep and --exploration-sweep are only used by --protocol tradeoffs"
        )
    if tradeoffs and args.models:
        raise CommandError("--models is not used by --protocol tradeoffs (hybrid only)")
    if tradeoffs and not args.items:
        raise CommandError("--items is required with --protocol tradeoffs")
    if tradeoffs and (args.fairness or args.group_by or args.exposure_by):
        raise CommandError(
            "--fairness, --group-by and --exposure-by are not available with --protocol "
            "tradeoffs (--diversity-by is: the columns of its Jaccard ILD)"
        )
    config = train_config(args)
    settings = ProtocolSettings(
        args.protocol,
        k=args.k,
        relevant=parse_relevant(args.relevant),
        models=_model_list(args.models),
        test_days=args.test_days,
        test_fraction=args.test_fraction,
        recent_days=args.recent_days,
        item_fraction=args.item_fraction,
        fold_users=args.fold_users,
        split_seed=args.split_seed,
        diversity_sweep=args.diversity_sweep,
        exploration_sweep=args.exploration_sweep,
        diversity_by=_columns(args.diversity_by) if tradeoffs else None,
        fairness=None if tradeoffs else _fairness_settings(args),
    )
    if args.save_to is not None and not args.save_to.strip():
        raise CommandError("--save-to: give a state directory or a postgresql:// URL")
    # Named when it starts; the store is opened first: a wrong location fails before the run.
    name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{args.protocol}"
    store = _open_store(args.save_to) if args.save_to is not None else None
    try:
        data = read_interactions(args.interactions, args.strict, args.quiet)
        items = read_features(args.items, "item_id", args.strict, args.quiet)
        users = read_features(args.users, "user_id", args.strict, args.quiet)
        test = read_interactions(args.test, args.strict, args.quiet) if needs_test else None
        report = run_protocol(
            settings, data, config, test=test, items=items, users=users, progress=not args.quiet
        )
        payload = json.dumps(report.to_json(), indent=2) if args.json or store is not None else ""
        if args.json == "-":
            print(payload)
        elif args.json:
            Path(args.json).write_text(payload + "\n", encoding="utf-8")
        if args.json != "-":
            print(report.table())
        plots = _write_plots(report, args.plot, announce=args.json != "-") if args.plot else []
        if store is not None:
            _save(store, args.save_to, name, report, payload, plots, stdout=args.json != "-")
    finally:
        if store is not None:
            store.close()
    return EXIT_OK


def _open_store(location: str) -> EventStore:
    from shelfrank.server.stores import open_store

    return open_store(location)


def _save(
    store: EventStore,
    location: str,
    name: str,
    report: EvaluationReport,
    payload: str,
    plots: list[tuple[str, Path]],
    *,
    stdout: bool,
) -> None:
    """Store the report as ``--json`` writes it and every chart: those ``--plot`` drew
    when they are PNGs, else drawn now into a temporary folder (the dashboard shows
    PNGs). Stored names do not depend on ``--plot``'s: see _write_plots."""
    from shelfrank.server.stores import describe_location

    files = [("report.json", (payload + "\n").encode("utf-8"))]
    if plots and all(path.suffix.lower() == ".png" for _, path in plots):
        files += [(stored, path.read_bytes()) for stored, path in plots]
    else:
        with tempfile.TemporaryDirectory(prefix="shelfrank-plots-") as folder:
            drawn = _write_plots(report, str(Path(folder) / "plot.png"), announce=False)
            files += [(stored, path.read_bytes()) for stored, path in drawn]
    saved = store.save_evaluation(name, files)
    # With --json -, stdout is the JSON alone.
    print(
        f"evaluation {saved.name} saved to {describe_location(location)}",
        file=sys.stdout if stdout else sys.stderr,
    )


def _fairness_settings(args: argparse.Namespace) -> FairnessSettings | None:
    """The fairness figures asked for on the command line, or None."""
    if not (args.fairness or args.group_by or args.exposure_by or args.diversity_by):
        return None
    if args.protocol not in FAIRNESS_PROTOCOLS:
        raise CommandError(
            f"--fairness, --group-by, --exposure-by and --diversity-by are not available "
            f"with --protocol {args.protocol}"
        )
    from shelfrank.server.evaluation.fairness import FairnessSettings

    return FairnessSettings(
        group_by=_columns(args.group_by),
        exposure_by=_columns(args.exposure_by) or (),
        diversity_by=_columns(args.diversity_by),
    )


def _columns(values: list[str] | None) -> tuple[str, ...] | None:
    """Repeated and comma-separated column options, in order, without repeats."""
    if values is None:
        return None
    return tuple(dict.fromkeys(c.strip() for v in values for c in v.split(",") if c.strip()))


def _model_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [m.strip() for m in text.split(",") if m.strip()]


def _write_plots(report: EvaluationReport, path: str, announce: bool) -> list[tuple[str, Path]]:
    """The metrics chart at ``path`` and, beside it, the blend's chart when the blend was
    fitted and the per-group P@k chart when users were grouped; for the tradeoffs protocol
    its two curves alone. Returns each chart's name in a saved evaluation (metrics.png,
    groups.png, blend.png; tradeoffs.png) and where it was written."""
    from shelfrank.server.evaluation.report import (
        save_blend_plot,
        save_group_plot,
        save_plot,
        save_tradeoff_plot,
    )
    from shelfrank.server.evaluation.tradeoffs import TradeoffReport

    if isinstance(report, TradeoffReport):
        save_tradeoff_plot(report, path)
        if announce:
            print(f"plot written to {path}")
        return [("tradeoffs.png", Path(path))]
    save_plot(report, path)
    written = [("metrics.png", Path(path))]
    if report.fairness is not None and report.fairness.group_by and report.fairness.models:
        groups_path = Path(path).with_name(Path(path).stem + "-groups.png")
        save_group_plot(report.fairness, groups_path)
        written.append(("groups.png", groups_path))
        if announce:
            print(f"per-group plot written to {groups_path}")
    if report.notes.get("blend_fit"):
        blend_path = Path(path).with_name(Path(path).stem + "-blend.png")
        save_blend_plot(report.notes["blend_fit"], blend_path)
        written.append(("blend.png", blend_path))
        if announce:
            print(f"blend plot written to {blend_path}")
    if announce:
        print(f"plot written to {path}")
    return written
