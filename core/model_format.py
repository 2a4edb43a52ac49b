"""The model directory format (``shelfrank-model``, format version 1).

``manifest.json`` holds the format and model versions, training parameters, counts and
the sha256 of every array file; ``serving.npz`` holds what recommending needs (readable
here, without LightFM, by the server and the edge alike); the server adds
``training.npz`` with LightFM's optimiser state for incremental training. Strings (ids,
token vocabularies) are stored as UTF-8 blobs plus offsets, never as pickled objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shelfrank.core.artifact import Artifact, read_artifact, verify_artifact, write_artifact
from shelfrank.core.blend import BlendTable, ItemNeighbours, RankingSignals
from shelfrank.core.errors import ModelFileError
from shelfrank.core.foldin import FoldInConfig
from shelfrank.core.ids import IdMap
from shelfrank.core.representation import TokenEmbeddings
from shelfrank.core.scoring import ScoringTable
from shelfrank.core.serving import ServingModel, SparseRows
from shelfrank.core.strings import decode_strings, encode_strings

MODEL_FORMAT = "shelfrank-model"
MODEL_FORMAT_VERSION = 1
SERVING_GROUP = "serving"


def _strings(prefix: str, values: IdMap) -> dict[str, npt.NDArray[Any]]:
    blob, offsets = encode_strings(values.ids)
    return {f"{prefix}_blob": blob, f"{prefix}_offsets": offsets}


def serving_arrays(model: ServingModel) -> dict[str, npt.NDArray[Any]]:
    return {
        **_strings("item_ids", model.items.item_ids),
        "item_vectors": model.items.item_vectors,
        "item_biases": model.items.item_biases,
        "item_tokens_indptr": model.item_tokens.indptr,
        "item_tokens_indices": model.item_tokens.indices,
        **_strings("item_token_vocab", model.item_token_embeddings.vocabulary),
        "item_token_embeddings": model.item_token_embeddings.embeddings,
        "item_token_biases": model.item_token_embeddings.biases,
        **_strings("user_ids", model.user_ids),
        "user_vectors": model.user_vectors,
        "user_biases": model.user_biases,
        **_strings("user_token_vocab", model.user_token_embeddings.vocabulary),
        "user_token_embeddings": model.user_token_embeddings.embeddings,
        "user_token_biases": model.user_token_embeddings.biases,
        "item_popularity": model.item_popularity,
        "seen_indptr": model.seen.indptr,
        "seen_indices": model.seen.indices,
        **_signal_arrays(model),
    }


def _signal_arrays(model: ServingModel) -> dict[str, npt.NDArray[Any]]:
    """Blended ranking's arrays (optional: a reader that predates them ranks by the model's
    score alone)."""
    signals = model.signals
    if signals is None or model.seen_strength is None or model.seen_repeat is None:
        return {}
    return {
        "item_trend": signals.trend,
        "item_repeat_rate": signals.repeat_rate,
        "neighbour_indptr": signals.neighbours.indptr,
        "neighbour_indices": signals.neighbours.indices,
        "neighbour_weights": signals.neighbours.weights,
        "seen_strength": model.seen_strength,
        "seen_repeat": model.seen_repeat,
        **_segment_arrays(model),
    }


def _segment_arrays(model: ServingModel) -> dict[str, npt.NDArray[Any]]:
    segment = model.signals.segment_trend if model.signals is not None else None
    if segment is None or model.user_token_rows is None:
        return {}
    return {
        "segment_indptr": segment.indptr,
        "segment_indices": segment.indices,
        "segment_weights": segment.weights,
        "user_tokens_indptr": model.user_token_rows.indptr,
        "user_tokens_indices": model.user_token_rows.indices,
    }


def save_model_directory(
    directory: str | Path,
    model: ServingModel,
    *,
    metadata: Mapping[str, Any],
    extra_groups: Mapping[str, Mapping[str, npt.NDArray[Any]]] | None = None,
) -> dict[str, Any]:
    """Write a model directory; the manifest goes last so a partial write never loads."""
    meta = {
        **metadata,
        "model_version": model.model_version,
        "identity_weight": {
            "items": model.item_token_embeddings.identity_weight,
            "users": model.user_token_embeddings.identity_weight,
        },
        "token_weighting": {
            "items": model.item_token_embeddings.weighting,
            "users": model.user_token_embeddings.weighting,
        },
        "fold_in": {
            "l2": model.fold_in.l2,
            "max_iterations": model.fold_in.max_iterations,
            "tolerance": model.fold_in.tolerance,
            "max_softmax_items": model.fold_in.max_softmax_items,
            "seed": model.fold_in.seed,
        },
        "counts": {"users": len(model.user_ids), "items": len(model.items), "dim": model.items.dim},
    }
    if model.signals is not None:
        meta["blend"] = {
            "weights": model.signals.blend.to_json(),
            "mf_scale": model.signals.mf_scale,
        }
    groups = {SERVING_GROUP: serving_arrays(model), **(extra_groups or {})}
    return write_artifact(
        directory,
        kind=MODEL_FORMAT,
        format_version=MODEL_FORMAT_VERSION,
        metadata=meta,
        groups=groups,
    )


def read_model_directory(directory: str | Path) -> Artifact:
    return read_artifact(directory, kind=MODEL_FORMAT, max_version=MODEL_FORMAT_VERSION)


def verify_model_directory(directory: str | Path) -> dict[str, Any]:
    """The model's manifest, with every file's checksum verified (no arrays loaded)."""
    return verify_artifact(directory, kind=MODEL_FORMAT, max_version=MODEL_FORMAT_VERSION)


def _ids(artifact: Artifact, prefix: str) -> IdMap:
    blob = artifact.array(SERVING_GROUP, f"{prefix}_blob", ndim=1, kind="u")
    offsets = artifact.array(SERVING_GROUP, f"{prefix}_offsets", ndim=1, kind="i")
    path = artifact.directory / f"{SERVING_GROUP}.npz"
    try:
        return IdMap(decode_strings(blob, offsets))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"{prefix}: {exc}") from None


def serving_model_from(artifact: Artifact) -> ServingModel:
    """Build the serving model from a verified artifact; inconsistencies name the file."""
    manifest = artifact.manifest
    path = artifact.directory / f"{SERVING_GROUP}.npz"

    def arr(name: str, ndim: int, kind: str) -> npt.NDArray[Any]:
        return artifact.array(SERVING_GROUP, name, ndim=ndim, kind=kind)

    try:
        identity = manifest["identity_weight"]
        weighting = manifest.get("token_weighting", {"items": "training", "users": "training"})
        fold = FoldInConfig(**manifest["fold_in"])
        items = ScoringTable(
            _ids(artifact, "item_ids"), arr("item_vectors", 2, "f"), arr("item_biases", 1, "f")
        )
        item_tokens = TokenEmbeddings(
            _ids(artifact, "item_token_vocab"),
            arr("item_token_embeddings", 2, "f"),
            arr("item_token_biases", 1, "f"),
            identity_weight=float(identity["items"]),
            weighting=weighting["items"],
        )
        user_tokens = TokenEmbeddings(
            _ids(artifact, "user_token_vocab"),
            arr("user_token_embeddings", 2, "f"),
            arr("user_token_biases", 1, "f"),
            identity_weight=float(identity["users"]),
            weighting=weighting["users"],
        )
        signals, seen_strength, seen_repeat, token_rows = _signals(artifact, arr, manifest)
        return ServingModel(
            items=items,
            item_tokens=SparseRows(
                arr("item_tokens_indptr", 1, "i"), arr("item_tokens_indices", 1, "i")
            ),
            item_token_embeddings=item_tokens,
            user_ids=_ids(artifact, "user_ids"),
            user_vectors=np.ascontiguousarray(arr("user_vectors", 2, "f"), dtype=np.float32),
            user_biases=np.ascontiguousarray(arr("user_biases", 1, "f"), dtype=np.float32),
            user_token_embeddings=user_tokens,
            item_popularity=np.asarray(arr("item_popularity", 1, "f"), dtype=np.float32),
            seen=SparseRows(arr("seen_indptr", 1, "i"), arr("seen_indices", 1, "i")),
            fold_in=fold,
            model_version=str(manifest.get("model_version", "")),
            signals=signals,
            seen_strength=seen_strength,
            seen_repeat=seen_repeat,
            user_token_rows=token_rows,
        )
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"inconsistent model: {exc}") from None


def _signals(
    artifact: Artifact, arr: Any, manifest: dict[str, Any]
) -> tuple[
    RankingSignals | None,
    npt.NDArray[np.float32] | None,
    npt.NDArray[np.float32] | None,
    SparseRows | None,
]:
    if "blend" not in manifest:
        return None, None, None, None
    blend = manifest["blend"]
    neighbours = ItemNeighbours(
        arr("neighbour_indptr", 1, "i").astype(np.int64),
        arr("neighbour_indices", 1, "i").astype(np.int64),
        np.asarray(arr("neighbour_weights", 1, "f"), np.float32),
    )
    trend = np.asarray(arr("item_trend", 1, "f"), np.float32)
    segment, user_tokens = None, None
    if "segment_indptr" in artifact.groups[SERVING_GROUP]:
        segment = ItemNeighbours(
            arr("segment_indptr", 1, "i").astype(np.int64),
            arr("segment_indices", 1, "i").astype(np.int64),
            np.asarray(arr("segment_weights", 1, "f"), np.float32),
            items=int(trend.size),
        )
        user_tokens = SparseRows(
            arr("user_tokens_indptr", 1, "i").astype(np.int64),
            arr("user_tokens_indices", 1, "i").astype(np.int64),
        )
    signals = RankingSignals(
        trend=trend,
        repeat_rate=np.asarray(arr("item_repeat_rate", 1, "f"), np.float32),
        neighbours=neighbours,
        blend=BlendTable.from_json(blend["weights"]),
        mf_scale=float(blend["mf_scale"]),
        segment_trend=segment,
    )
    return (
        signals,
        np.asarray(arr("seen_strength", 1, "f"), np.float32),
        np.asarray(arr("seen_repeat", 1, "f"), np.float32),
        user_tokens,
    )


def load_serving_model(directory: str | Path) -> tuple[ServingModel, dict[str, Any]]:
    artifact = read_model_directory(directory)
    return serving_model_from(artifact), artifact.manifest
