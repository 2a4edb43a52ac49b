"""Incremental training: continue an existing model on new events, with room for new
users, items and tokens (the parameters are grown as ``server/lightfm_params.py`` says).
"""

from __future__ import annotations

from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.hybrid import HybridModel


def continue_training(
    previous: HybridModel,
    interactions: Interactions,
    *,
    items: FeatureTable | None = None,
    users: FeatureTable | None = None,
    epochs: int = 5,
    progress: bool = False,
) -> HybridModel:
    """A new model: ``previous`` continued for ``epochs`` on ``interactions`` (all events
    to learn from, old and new). ``previous`` itself is left untouched."""
    return previous.continued(
        interactions, items=items, users=users, epochs=epochs, progress=progress
    )


__all__ = ["continue_training"]
