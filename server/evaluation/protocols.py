"""Every offline evaluation protocol behind one call (what ``shelfrank evaluate`` runs).

The protocols' modules are imported when one runs: this module is light, so the command
line can read :data:`PROTOCOLS` while it builds its parser.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.events import POSITIVE_EVENT_TYPES, EventType

if TYPE_CHECKING:
    from shelfrank.datasets.records import FeatureTable, Interactions
    from shelfrank.server.config import TrainConfig
    from shelfrank.server.evaluation.fairness import FairnessSettings
    from shelfrank.server.evaluation.runner import EvaluationReport

PROTOCOLS = ("given", "random", "temporal", "cold-items", "fold-in", "edge-replay", "tradeoffs")
# Protocols that score a separate test file (the others split the data themselves).
NEEDS_TEST = ("given", "fold-in", "tradeoffs")
# Protocols that can add per-group and item-side figures (server/evaluation/fairness.py).
FAIRNESS_PROTOCOLS = ("given", "random", "temporal", "cold-items", "fold-in")
SPLIT_MODELS = ("hybrid", "lightfm-cf", "popularity", "user-knn")


@dataclass(frozen=True)
class ProtocolSettings:
    protocol: str
    k: int = 10
    relevant: Collection[EventType] = POSITIVE_EVENT_TYPES
    # None: the protocol's own list (temporal: every shop model; split protocols:
    # SPLIT_MODELS); edge-replay compares fixed rankers and ignores it, tradeoffs
    # steers the hybrid model alone and refuses it.
    models: Sequence[str] | None = None
    test_days: float | None = None  # temporal
    test_fraction: float = 0.2  # temporal (without test_days), random
    recent_days: float = 30.0  # temporal
    item_fraction: float = 0.2  # cold-items, tradeoffs
    fold_users: int = 100  # fold-in
    split_seed: int = 0  # random, cold-items, fold-in, tradeoffs
    # tradeoffs: the diversity and exploration shares swept (None: the protocol's
    # defaults; 0 is always added) and the item columns of the Jaccard intra-list
    # diversity (None: every column of the items file).
    diversity_sweep: Sequence[float] | None = None
    exploration_sweep: Sequence[float] | None = None
    diversity_by: tuple[str, ...] | None = None
    # Per-group and item-side figures (None: none); every protocol but edge-replay and
    # tradeoffs.
    fairness: FairnessSettings | None = None


def run_protocol(
    settings: ProtocolSettings,
    data: Interactions,
    config: TrainConfig,
    *,
    test: Interactions | None = None,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Train on ``data`` (less what the protocol holds out) and report every model's
    metrics; ``test`` is the test file of the protocols in :data:`NEEDS_TEST`. The
    ``tradeoffs`` protocol returns a
    :class:`~shelfrank.server.evaluation.tradeoffs.TradeoffReport` (its curves instead of
    per-model results)."""
    protocol = settings.protocol
    if protocol not in PROTOCOLS:
        raise InvalidInputError(
            f"protocol: unknown {protocol!r}; choose from {', '.join(PROTOCOLS)}"
        )
    if protocol in NEEDS_TEST and test is None:
        raise InvalidInputError(f"test: protocol {protocol} needs test interactions")
    if protocol not in NEEDS_TEST and test is not None:
        raise InvalidInputError(f"test: protocol {protocol} takes no test interactions")
    if settings.fairness is not None and protocol not in FAIRNESS_PROTOCOLS:
        raise InvalidInputError(
            f"fairness: not measured by protocol {protocol}; use one of "
            f"{', '.join(FAIRNESS_PROTOCOLS)}"
        )
    tradeoff_options = (
        settings.diversity_sweep is not None
        or settings.exploration_sweep is not None
        or settings.diversity_by is not None
    )
    if protocol != "tradeoffs" and tradeoff_options:
        raise InvalidInputError(
            f"diversity_sweep, exploration_sweep and diversity_by: only for protocol "
            f"tradeoffs, not {protocol} (the fairness report has its own diversity_by)"
        )
    if protocol == "tradeoffs" and settings.models is not None:
        raise InvalidInputError("models: protocol tradeoffs steers the hybrid model alone")
    if protocol == "temporal":
        from shelfrank.server.evaluation.shop import SHOP_MODELS, evaluate_shop

        return evaluate_shop(
            data,
            config,
            items=items,
            users=users,
            test_days=settings.test_days,
            test_fraction=settings.test_fraction,
            recent_days=settings.recent_days,
            k=settings.k,
            models=SHOP_MODELS if settings.models is None else settings.models,
            relevant=settings.relevant,
            progress=progress,
            fairness=settings.fairness,
        )
    if protocol == "edge-replay":
        from shelfrank.server.evaluation.edge_replay import evaluate_edge_replay

        return evaluate_edge_replay(
            data,
            config,
            items=items,
            users=users,
            k=settings.k,
            relevant=settings.relevant,
            progress=progress,
        )
    if protocol == "tradeoffs" and test is not None:
        from shelfrank.server.evaluation import tradeoffs

        return tradeoffs.evaluate_tradeoffs(
            data,
            test,
            config,
            items=items,
            users=users,
            k=settings.k,
            relevant=settings.relevant,
            diversities=(
                tradeoffs.DEFAULT_DIVERSITY_SWEEP
                if settings.diversity_sweep is None
                else settings.diversity_sweep
            ),
            explorations=(
                tradeoffs.DEFAULT_EXPLORATION_SWEEP
                if settings.exploration_sweep is None
                else settings.exploration_sweep
            ),
            diversity_by=settings.diversity_by,
            item_fraction=settings.item_fraction,
            split_seed=settings.split_seed,
            progress=progress,
        )
    if protocol == "fold-in" and test is not None:
        from shelfrank.server.evaluation.fold_in import evaluate_fold_in

        return evaluate_fold_in(
            data,
            test,
            config,
            items=items,
            users=users,
            fold_users=settings.fold_users,
            seed=settings.split_seed,
            k=settings.k,
            relevant=settings.relevant,
            progress=progress,
            fairness=settings.fairness,
        )
    from shelfrank.server.evaluation import splits
    from shelfrank.server.evaluation.runner import evaluate_split

    if test is not None:  # given
        split = splits.given_split(data, test)
    elif protocol == "random":
        split = splits.random_split(data, settings.test_fraction, settings.split_seed)
    else:
        split = splits.cold_items_split(data, settings.item_fraction, settings.split_seed)
    return evaluate_split(
        split,
        config,
        items=items,
        users=users,
        k=settings.k,
        models=SPLIT_MODELS if settings.models is None else settings.models,
        relevant=settings.relevant,
        progress=progress,
        fairness=settings.fairness,
    )
