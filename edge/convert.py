"""Building a device snapshot straight from a model directory (no server needed)."""

from __future__ import annotations

from pathlib import Path

from shelfrank.core.model_format import load_serving_model
from shelfrank.core.snapshot import Snapshot, build_snapshot


def snapshot_from_model_directory(directory: Path, user_id: str) -> Snapshot:
    model, _ = load_serving_model(directory)
    user = model.user_vector(user_id)
    return build_snapshot(
        f"{model.model_version}.local",
        model.model_version,
        model.item_ids,
        model.items.item_vectors,
        model.items.item_biases,
        model.item_popularity,
        model.item_token_embeddings.vocabulary,
        model.item_tokens,
        user_id=user_id,
        user_vector=user.vector,
        user_bias=user.bias,
    )
