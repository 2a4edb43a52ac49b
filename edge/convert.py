"""Building a device snapshot straight from a model directory (no server needed)."""

from __future__ import annotations

from pathlib import Path

from shelfrank.core.model_format import load_serving_model
from shelfrank.core.snapshot import Snapshot, snapshot_of


def snapshot_from_model_directory(directory: Path, user_id: str) -> Snapshot:
    model, _ = load_serving_model(directory)
    user = model.user_vector(user_id)
    return snapshot_of(
        model,
        f"{model.model_version}.local",
        user_id=user_id,
        user_vector=user.vector,
        user_bias=user.bias,
        # Items without any interaction in the training data may take exploration slots.
        new_items=model.item_popularity <= 0,
    )
