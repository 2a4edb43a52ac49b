"""The ``shelfrank`` command line.

Exit codes: 0 success, 1 the work failed (bad data, unreadable model, ...), 2 bad usage.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from shelfrank.core.errors import ShelfrankError
from shelfrank.core.events import EventType

if TYPE_CHECKING:  # the command modules import the heavy parts lazily
    from shelfrank.server.config import TrainConfig

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
SHOWN_ROW_ERRORS = 10


class CommandError(Exception):
    """A one-line failure message for the user (exit 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _event_weight(text: str) -> tuple[EventType, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TYPE=WEIGHT, got {text!r}")
    try:
        return EventType.parse(name), float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--epochs", type=_positive_int)
    group.add_argument("--components", type=_positive_int)
    group.add_argument("--loss", choices=("warp", "bpr", "warp-kos", "logistic"))
    group.add_argument("--learning-rate", type=_positive_float)
    group.add_argument("--learning-schedule", choices=("adagrad", "adadelta"))
    group.add_argument("--item-alpha", type=float)
    group.add_argument("--user-alpha", type=float)
    group.add_argument("--max-sampled", type=_positive_int)
    group.add_argument("--identity-weight", type=_positive_float)
    group.add_argument(
        "--event-weight",
        type=_event_weight,
        action="append",
        default=[],
        metavar="TYPE=W",
        help="weight of an event type, e.g. view=0.25",
    )
    group.add_argument(
        "--item-cold-start",
        choices=("ridge", "lightfm"),
        help="vectors of items without interactions: ridge map (default) or LightFM tokens",
    )
    group.add_argument("--no-item-features", action="store_true")
    group.add_argument("--no-user-features", action="store_true")
    group.add_argument("--fold-in-l2", type=_positive_float)
    group.add_argument(
        "--no-blend",
        action="store_true",
        help="rank by the LightFM score alone (no item-to-item, repeat or trend signals)",
    )
    group.add_argument(
        "--half-life-days",
        type=_positive_float,
        help="age at which an event counts half (default: chosen on a validation split)",
    )
    group.add_argument("--item-item", choices=("auto", "ease", "knn", "off"))
    group.add_argument("--item-item-l2", type=_positive_float, help="EASE's lambda")
    group.add_argument("--neighbours", type=_positive_int, help="item-to-item neighbours kept")
    group.add_argument(
        "--validation-fraction",
        type=_fraction,
        help="share of events the blend is fitted on (default 0.1)",
    )
    group.add_argument(
        "--validation-split",
        choices=("time", "random"),
        help="hold out the newest events (time, the default: predicting the next weeks) or "
        "a random share of each shopper's items (random: for a random test split)",
    )
    group.add_argument("--threads", type=_positive_int, help="default: all cores")
    group.add_argument(
        "--seed",
        type=_non_negative_int,
        help="with --threads 1 the model is bit-identical across runs",
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from dataclasses import replace

    from shelfrank.core.foldin import FoldInConfig
    from shelfrank.server.config import TrainConfig

    config = TrainConfig()
    mapping = {
        "epochs": "epochs",
        "components": "components",
        "loss": "loss",
        "learning_rate": "learning_rate",
        "learning_schedule": "learning_schedule",
        "item_alpha": "item_alpha",
        "user_alpha": "user_alpha",
        "max_sampled": "max_sampled",
        "identity_weight": "identity_weight",
        "item_cold_start": "item_cold_start",
        "threads": "num_threads",
        "seed": "seed",
        "half_life_days": "half_life_days",
        "item_item": "item_item",
        "item_item_l2": "item_item_l2",
        "neighbours": "neighbours",
        "validation_fraction": "validation_fraction",
        "validation_split": "validation_split",
    }
    changes: dict[str, Any] = {
        field: getattr(args, arg)
        for arg, field in mapping.items()
        if getattr(args, arg) is not None
    }
    if args.event_weight:
        changes["event_weights"] = {**config.event_weights, **dict(args.event_weight)}
    if args.no_item_features:
        changes["use_item_features"] = False
    if args.no_user_features:
        changes["use_user_features"] = False
    if args.fold_in_l2 is not None:
        changes["fold_in"] = FoldInConfig(l2=args.fold_in_l2)
    if args.no_blend:
        changes["blend"] = False
    return replace(config, **changes)


def _report_rows(report: Any, quiet: bool) -> None:
    if quiet and not report.rows_rejected:
        return
    print(report.summary(), file=sys.stderr)
    for error in report.errors[:SHOWN_ROW_ERRORS]:
        print(f"  {error}", file=sys.stderr)
    if report.rows_rejected > SHOWN_ROW_ERRORS:
        print(
            f"  ... and {report.rows_rejected - SHOWN_ROW_ERRORS} more rejected rows",
            file=sys.stderr,
        )


def _read_interactions(paths: Sequence[str], strict: bool, quiet: bool) -> Any:
    from shelfrank.datasets import read_interactions
    from shelfrank.datasets.records import Interactions

    parts = []
    for path in paths:
        table, report = read_interactions(path, strict=strict)
        _report_rows(report, quiet)
        parts.append(table)
    return Interactions.concat(parts)


def _read_features(path: str | None, id_column: str, strict: bool, quiet: bool) -> Any:
    if path is None:
        return None
    from shelfrank.datasets import read_features

    table, report = read_features(path, id_column, strict=strict)
    _report_rows(report, quiet)
    return table


def _read_id_list(path: str, what: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CommandError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read {what} file: {exc}") from None
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


# -- commands ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from shelfrank.server.hybrid import HybridModel

    config = _train_config(args)
    interactions = _read_interactions([args.interactions], args.strict, args.quiet)
    items = _read_features(args.items, "item_id", args.strict, args.quiet)
    users = _read_features(args.users, "user_id", args.strict, args.quiet)
    model = HybridModel.train(
        interactions, config, items=items, users=users, progress=not args.quiet
    )
    manifest = model.save(args.out)
    if not args.quiet:
        print(model.summary)
    print(f"model {manifest['model_version']} written to {args.out}")
    return EXIT_OK


def cmd_recommend(args: argparse.Namespace) -> int:
    from shelfrank.core.model_format import load_serving_model
    from shelfrank.server.evaluation.fold_in import histories_for
    from shelfrank.server.offline import recommend_users

    model, manifest = load_serving_model(args.model)
    histories: dict[str, Any] = {}
    if args.history:
        from shelfrank.server.config import TrainConfig

        history = _read_interactions([args.history], args.strict, args.quiet)
        config = TrainConfig.from_json(manifest["params"])
        histories = histories_for(history, config, model)
    tokens = {}
    user_table = _read_features(args.user_features, "user_id", args.strict, args.quiet)
    if user_table is not None:
        tokens = user_table.as_dict()
    if args.users == "all":
        users = list(dict.fromkeys([*model.user_ids.ids, *histories]))
    else:
        users = _read_id_list(args.users, "users")
    candidates = _read_id_list(args.candidates, "candidates") if args.candidates else None
    if candidates is not None:
        unknown = [c for c in candidates if c not in model.item_ids]
        if unknown and not args.quiet:
            print(
                f"{len(unknown)} candidate item(s) unknown to the model are skipped, e.g. "
                f"{unknown[0]!r}",
                file=sys.stderr,
            )
    count = 0
    out_path = Path(args.out)
    try:
        handle = out_path.open("w", encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{out_path}: cannot write: {exc.strerror}") from None
    with handle:
        for rec in recommend_users(
            model,
            users,
            args.k,
            exclude_seen=args.exclude_seen,
            mode=args.mode or ("new" if args.exclude_seen else "repeat"),
            candidate_item_ids=candidates,
            histories=histories,
            user_tokens=tokens,
        ):
            handle.write(json.dumps(rec.to_json()) + "\n")
            count += 1
    print(f"{count} users written to {out_path}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from shelfrank.server.evaluation import splits
    from shelfrank.server.evaluation.fold_in import evaluate_fold_in
    from shelfrank.server.evaluation.report import save_plot
    from shelfrank.server.evaluation.runner import evaluate_split, parse_relevant

    needs_test = args.protocol in ("given", "fold-in")
    if needs_test and not args.test:
        raise CommandError(f"--test is required with --protocol {args.protocol}")
    if not needs_test and args.test:
        raise CommandError(f"--test is not used by --protocol {args.protocol}")
    config = _train_config(args)
    relevant = parse_relevant(args.relevant)
    data = _read_interactions(args.interactions, args.strict, args.quiet)
    items = _read_features(args.items, "item_id", args.strict, args.quiet)
    users = _read_features(args.users, "user_id", args.strict, args.quiet)
    progress = not args.quiet
    if args.protocol == "temporal":
        from shelfrank.server.evaluation.shop import SHOP_MODELS, evaluate_shop

        report = evaluate_shop(
            data,
            config,
            items=items,
            users=users,
            test_days=args.test_days,
            test_fraction=args.test_fraction,
            recent_days=args.recent_days,
            k=args.k,
            models=_model_list(args.models, SHOP_MODELS),
            relevant=relevant,
            progress=progress,
        )
    elif args.protocol == "edge-replay":
        from shelfrank.server.evaluation.edge_replay import evaluate_edge_replay

        report = evaluate_edge_replay(
            data, config, items=items, users=users, k=args.k, relevant=relevant, progress=progress
        )
    elif args.protocol == "fold-in":
        test = _read_interactions(args.test, args.strict, args.quiet)
        report = evaluate_fold_in(
            data,
            test,
            config,
            items=items,
            users=users,
            fold_users=args.fold_users,
            seed=args.split_seed,
            k=args.k,
            relevant=relevant,
            progress=progress,
        )
    else:
        if args.protocol == "given":
            split = splits.given_split(data, _read_interactions(args.test, args.strict, args.quiet))
        elif args.protocol == "random":
            split = splits.random_split(data, args.test_fraction, args.split_seed)
        else:
            split = splits.cold_items_split(data, args.item_fraction, args.split_seed)
        models = _model_list(args.models, ("hybrid", "lightfm-cf", "popularity", "user-knn"))
        report = evaluate_split(
            split,
            config,
            items=items,
            users=users,
            k=args.k,
            models=models,
            relevant=relevant,
            progress=progress,
        )
    if args.json:
        payload = json.dumps(report.to_json(), indent=2)
        if args.json == "-":
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n", encoding="utf-8")
    if args.json != "-":
        print(report.table())
    if args.plot:
        save_plot(report, args.plot)
        if report.notes.get("blend_fit"):
            from shelfrank.server.evaluation.report import save_blend_plot

            blend_path = Path(args.plot).with_name(Path(args.plot).stem + "-blend.png")
            save_blend_plot(report.notes["blend_fit"], blend_path)
            if args.json != "-":
                print(f"blend plot written to {blend_path}")
        if args.json != "-":
            print(f"plot written to {args.plot}")
    return EXIT_OK


def _model_list(text: str | None, default: Sequence[str]) -> list[str]:
    if text is None:
        return list(default)
    return [m.strip() for m in text.split(",") if m.strip()]


def cmd_synth(args: argparse.Namespace) -> int:
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


def cmd_import_movielens(args: argparse.Namespace) -> int:
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
        _report_rows(report, quiet=True)
        write_interactions(out / f"{path.name}.csv", table)
    print(f"items.csv, users.csv and {len(rating_files)} interaction files written to {out}")
    return EXIT_OK


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
}


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
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


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from shelfrank.server.ann import AnnConfig, SearchPolicy
    from shelfrank.server.app import ServerOptions, run

    logging.basicConfig(
        level=logging.INFO,
        format='{"time": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", '
        '"message": "%(message)s"}',
    )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("--tls-cert and --tls-key go together")
    run(
        ServerOptions(
            state_dir=Path(args.state),
            host=args.host,
            port=args.port,
            model_dir=Path(args.model) if args.model else None,
            token=args.token,
            reflection=not args.no_reflection,
            metrics_port=args.metrics_port,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            grace_seconds=args.grace,
            blas_threads=args.blas_threads,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            search=SearchPolicy(
                mode=args.search,
                ann=AnnConfig(ef_search=args.ef_search),
                compiled=args.compiled_search,
            ),
            retrain_interval_seconds=args.retrain_interval,
            train_config=_train_config(args),
        )
    )
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    """Load history (and catalogue, profiles) into a server state directory's store."""
    from shelfrank.server.ingest import ingest
    from shelfrank.server.store import EventStore

    interactions = _read_interactions([args.interactions], args.strict, args.quiet)
    items = _read_features(args.items, "item_id", args.strict, args.quiet)
    users = _read_features(args.users, "user_id", args.strict, args.quiet)
    store = EventStore(Path(args.state) / "events.sqlite3")
    try:
        outcome = ingest(store, interactions, items=items, users=users)
    finally:
        store.close()
    accepted, duplicates = outcome.stored, outcome.duplicates
    print(f"{accepted} events stored, {duplicates} already there, in {args.state}")
    return EXIT_OK


def cmd_export_snapshot(args: argparse.Namespace) -> int:
    from shelfrank.core.snapshot import write_snapshot
    from shelfrank.edge.convert import snapshot_from_model_directory

    snapshot = snapshot_from_model_directory(Path(args.model), args.user)
    manifest = write_snapshot(args.out, snapshot)
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    print(
        f"snapshot {snapshot.version} ({len(snapshot)} items, {size:,} bytes) written to {args.out}"
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from shelfrank.server.demo import run_demo

    run_demo(Path(args.out))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shelfrank", description="shelfrank recommender tools")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a hybrid model from CSV/JSONL files")
    train.add_argument("--interactions", required=True)
    train.add_argument("--items")
    train.add_argument("--users")
    train.add_argument("--out", required=True, help="model directory to write")
    train.add_argument("--strict", action="store_true", help="the first bad row is fatal")
    train.add_argument("--quiet", action="store_true")
    _add_training_options(train)
    train.set_defaults(func=cmd_train)

    rec = sub.add_parser("recommend", help="batch recommendations from a model directory")
    rec.add_argument("--model", required=True)
    rec.add_argument("--users", required=True, help="'all' or a file with one user id a line")
    rec.add_argument("--k", type=_positive_int, required=True)
    rec.add_argument("--exclude-seen", action="store_true")
    rec.add_argument(
        "--mode",
        choices=("new", "repeat"),
        help="blend to rank with: repeat (buy again; the default without --exclude-seen) "
        "or new (the default with it)",
    )
    rec.add_argument("--candidates", help="file of item ids (one a line) to rank among")
    rec.add_argument("--history", help="interactions CSV of users to fold in")
    rec.add_argument("--user-features", help="users CSV for users unknown to the model")
    rec.add_argument("--out", required=True, help="output .jsonl")
    rec.add_argument("--strict", action="store_true")
    rec.add_argument("--quiet", action="store_true")
    rec.set_defaults(func=cmd_recommend)

    ev = sub.add_parser("evaluate", help="offline evaluation against baselines")
    ev.add_argument(
        "--protocol",
        required=True,
        choices=("given", "random", "temporal", "cold-items", "fold-in", "edge-replay"),
    )
    ev.add_argument(
        "--interactions",
        required=True,
        action="append",
        help="training (or whole) interactions; repeat to concatenate files",
    )
    ev.add_argument("--test", action="append", help="test interactions (given, fold-in)")
    ev.add_argument("--items")
    ev.add_argument("--users")
    ev.add_argument("--k", type=_positive_int, default=10)
    ev.add_argument(
        "--relevant",
        default="positive",
        help="test event types that count as relevant: 'positive' or a list "
        "like 'purchase,add_to_cart'",
    )
    ev.add_argument(
        "--models",
        help="comma list (default: hybrid,lightfm-cf,popularity,user-knn; with temporal: "
        "shelfrank,hybrid-lightfm,lightfm-cf,popularity-recent,bought-most,ease,user-knn)",
    )
    ev.add_argument(
        "--test-days", type=_positive_float, help="temporal: the last N days are the test"
    )
    ev.add_argument(
        "--recent-days",
        type=_positive_float,
        default=30.0,
        help="temporal: window of the recent-popularity baseline",
    )
    ev.add_argument("--test-fraction", type=_fraction, default=0.2)
    ev.add_argument("--item-fraction", type=_fraction, default=0.2)
    ev.add_argument("--fold-users", type=_positive_int, default=100)
    ev.add_argument("--split-seed", type=_non_negative_int, default=0)
    ev.add_argument("--json", help="also write the report as JSON to this file ('-': stdout)")
    ev.add_argument("--plot", help="write a PNG bar chart of the metrics")
    ev.add_argument("--strict", action="store_true")
    ev.add_argument("--quiet", action="store_true")
    _add_training_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    synth = sub.add_parser("synth", help="generate a synthetic e-commerce data set")
    synth.add_argument("--items", type=_positive_int, required=True)
    synth.add_argument("--users", type=_positive_int, required=True)
    synth.add_argument("--events", type=_positive_int, required=True)
    synth.add_argument("--seed", type=_non_negative_int, default=0)
    synth.add_argument(
        "--shop",
        action="store_true",
        help="shop dynamics: repeat purchases of consumables, trends and launches, 180 days",
    )
    synth.add_argument("--out", required=True)
    synth.set_defaults(func=cmd_synth)

    ml = sub.add_parser("import-movielens", help="convert a MovieLens-100k folder to CSVs")
    ml.add_argument("--dir", required=True)
    ml.add_argument("--out", required=True)
    ml.add_argument("--strict", action="store_true")
    ml.set_defaults(func=cmd_import_movielens)

    serve = sub.add_parser("serve", help="run the gRPC recommendation server")
    serve.add_argument("--state", required=True, help="directory for the event store and models")
    serve.add_argument("--model", help="model directory to serve (imported into --state)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_non_negative_int, default=50051)
    serve.add_argument("--token", help="bearer token required from clients (or SHELFRANK_TOKEN)")
    serve.add_argument("--no-reflection", action="store_true")
    serve.add_argument("--metrics-port", type=_positive_int, help="Prometheus /metrics port")
    serve.add_argument("--tls-cert")
    serve.add_argument("--tls-key")
    serve.add_argument(
        "--grace", type=_positive_float, default=10.0, help="seconds in-flight calls get on SIGTERM"
    )
    serve.add_argument(
        "--blas-threads",
        type=_positive_int,
        default=1,
        help="threads per numpy/BLAS product (1 serves concurrent requests best)",
    )
    serve.add_argument(
        "--max-concurrent-rpcs",
        type=_positive_int,
        default=256,
        help="calls admitted at once; more are refused with RESOURCE_EXHAUSTED",
    )
    serve.add_argument(
        "--search",
        choices=("auto", "exact", "ann"),
        default="auto",
        help="exact top-k, approximate candidates (faiss HNSW) or auto: approximate only for "
        "tables of 500k+ items that cannot be pruned",
    )
    serve.add_argument(
        "--ef-search", type=_positive_int, default=256, help="HNSW search breadth (--search ann)"
    )
    serve.add_argument(
        "--compiled-search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the exact pruned search compiled, GIL released (numba); "
        "--no-compiled-search uses the numpy version (same results)",
    )
    serve.add_argument(
        "--retrain-interval", type=_positive_float, help="retrain in the background every N seconds"
    )
    _add_training_options(serve)
    serve.set_defaults(func=cmd_serve)

    ingest = sub.add_parser("ingest", help="load history into a server's event store")
    ingest.add_argument("--state", required=True)
    ingest.add_argument("--interactions", required=True)
    ingest.add_argument("--items")
    ingest.add_argument("--users")
    ingest.add_argument("--strict", action="store_true")
    ingest.add_argument("--quiet", action="store_true")
    ingest.set_defaults(func=cmd_ingest)

    export = sub.add_parser("export-snapshot", help="a device snapshot from a model directory")
    export.add_argument("--model", required=True)
    export.add_argument("--user", default="", help="include this user's vector")
    export.add_argument("--out", required=True)
    export.set_defaults(func=cmd_export_snapshot)

    bench = sub.add_parser(
        "bench", help="run the benchmarks (benchmarks/ of a source checkout; JSON, plots)"
    )
    bench.add_argument(
        "names", nargs="*", metavar="NAME", help=f"some of: {', '.join(BENCHMARKS)} (default all)"
    )
    bench.add_argument("--smoke", action="store_true", help="tiny sizes, seconds each (CI)")
    bench.add_argument("--out-dir", default="benchmarks/results")
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="the offline pipeline on synthetic demo data")
    demo.add_argument("--out", default="demo-out")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ModuleNotFoundError as exc:
        if exc.name in ("lightfm", "scipy", "tqdm", "matplotlib"):
            print(
                f"shelfrank: error: this command needs the server extra "
                f"(pip install 'shelfrank[server]'): missing {exc.name}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        raise
    except (CommandError, ShelfrankError, ValueError, OSError) as exc:
        print(f"shelfrank: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("shelfrank: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
