"""Argument types and the model options that train, evaluate and serve share."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, NoReturn

from shelfrank.core.events import EventType
from shelfrank.server.cli._errors import EXIT_USAGE

if TYPE_CHECKING:  # the command modules import the heavy parts lazily
    from shelfrank.server.config import TrainConfig


class Parser(argparse.ArgumentParser):
    """Bad usage exits with EXIT_USAGE and one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def share(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def event_weight(text: str) -> tuple[EventType, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TYPE=WEIGHT, got {text!r}")
    try:
        return EventType.parse(name), float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--epochs", type=positive_int)
    group.add_argument("--components", type=positive_int)
    group.add_argument("--loss", choices=("warp", "bpr", "warp-kos", "logistic"))
    group.add_argument("--learning-rate", type=positive_float)
    group.add_argument("--learning-schedule", choices=("adagrad", "adadelta"))
    group.add_argument("--item-alpha", type=float)
    group.add_argument("--user-alpha", type=float)
    group.add_argument("--max-sampled", type=positive_int)
    group.add_argument("--identity-weight", type=positive_float)
    group.add_argument(
        "--event-weight",
        type=event_weight,
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
    group.add_argument("--fold-in-l2", type=positive_float)
    group.add_argument(
        "--no-blend",
        action="store_true",
        help="rank by the LightFM score alone (no item-to-item, repeat or trend signals)",
    )
    group.add_argument(
        "--half-life-days",
        type=positive_float,
        help="age at which an event counts half (default: chosen on a validation split)",
    )
    group.add_argument("--item-item", choices=("auto", "ease", "knn", "off"))
    group.add_argument("--item-item-l2", type=positive_float, help="EASE's lambda")
    group.add_argument("--neighbours", type=positive_int, help="item-to-item neighbours kept")
    group.add_argument(
        "--validation-fraction",
        type=fraction,
        help="share of events the blend is fitted on (default 0.1)",
    )
    group.add_argument(
        "--validation-split",
        choices=("time", "random"),
        help="hold out the newest events (time, the default: predicting the next weeks) or "
        "a random share of each shopper's items (random: for a random test split)",
    )
    group.add_argument("--threads", type=positive_int, help="default: all cores")
    group.add_argument(
        "--seed",
        type=non_negative_int,
        help="with --threads 1 the model is bit-identical across runs",
    )


# option (argparse dest) -> TrainConfig field, for the options copied as they are
_CONFIG_FIELDS = {
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


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The default TrainConfig with the model options given on the command line."""
    from dataclasses import replace

    from shelfrank.core.foldin import FoldInConfig
    from shelfrank.server.config import TrainConfig

    config = TrainConfig()
    changes: dict[str, Any] = {
        field: getattr(args, option)
        for option, field in _CONFIG_FIELDS.items()
        if getattr(args, option) is not None
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
