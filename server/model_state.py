"""Saving and restoring LightFM's training state (no pickle: plain arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from lightfm import LightFM

from shelfrank.core.artifact import Artifact
from shelfrank.core.errors import InvalidInputError, ModelFileError
from shelfrank.core.ids import IdMap
from shelfrank.core.serving import SparseRows
from shelfrank.core.strings import decode_strings, encode_strings
from shelfrank.server.config import TrainConfig
from shelfrank.server.feature_space import FeatureSpace
from shelfrank.server.lightfm_params import STATE_ARRAYS, lightfm_state, new_lightfm
from shelfrank.server.training_data import TrainingData

GROUP = "training"


def _space_arrays(prefix: str, space: FeatureSpace) -> dict[str, npt.NDArray[Any]]:
    entity_blob, entity_offsets = encode_strings(space.entities.ids)
    feature_blob, feature_offsets = encode_strings(space.features.ids)
    lengths = [len(c) for c in space._token_columns]
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    columns = np.array([c for cols in space._token_columns for c in cols], dtype=np.int64)
    return {
        f"{prefix}_entities_blob": entity_blob,
        f"{prefix}_entities_offsets": entity_offsets,
        f"{prefix}_features_blob": feature_blob,
        f"{prefix}_features_offsets": feature_offsets,
        f"{prefix}_token_columns_indptr": indptr,
        f"{prefix}_token_columns": columns,
    }


def training_state_arrays(lightfm: LightFM, data: TrainingData) -> dict[str, npt.NDArray[Any]]:
    weights = data.weights
    return {
        **{f"lightfm_{k}": v for k, v in lightfm_state(lightfm).items()},
        **_space_arrays("users", data.users),
        **_space_arrays("items", data.items),
        "weights_rows": weights.row.astype(np.int64),
        "weights_cols": weights.col.astype(np.int64),
        "weights_data": weights.data.astype(np.float32),
    }


def _restore_space(
    artifact: Artifact, prefix: str, config: TrainConfig, use_tokens: bool
) -> FeatureSpace:
    def arr(name: str, kind: str) -> npt.NDArray[Any]:
        return artifact.array(GROUP, f"{prefix}_{name}", ndim=1, kind=kind)

    space = FeatureSpace(config.identity_weight, use_tokens=use_tokens)
    space.entities = IdMap(decode_strings(arr("entities_blob", "u"), arr("entities_offsets", "i")))
    space.features = IdMap(decode_strings(arr("features_blob", "u"), arr("features_offsets", "i")))
    rows = SparseRows(arr("token_columns_indptr", "i"), arr("token_columns", "i"))
    if rows.n_rows != len(space.entities):
        raise InvalidInputError(f"{prefix}: token rows do not match the entities")
    space._token_columns = [rows.row(i).tolist() for i in range(rows.n_rows)]
    return space


def restore_training(artifact: Artifact) -> tuple[TrainConfig, TrainingData, LightFM]:
    """What continuing a saved model's training needs: its configuration, training data
    and LightFM state."""
    path = artifact.directory / f"{GROUP}.npz"
    try:
        config = TrainConfig.from_json(artifact.manifest["params"])
        users = _restore_space(artifact, "users", config, config.use_user_features)
        items = _restore_space(artifact, "items", config, config.use_item_features)
        rows = artifact.array(GROUP, "weights_rows", ndim=1, kind="i")
        cols = artifact.array(GROUP, "weights_cols", ndim=1, kind="i")
        data = artifact.array(GROUP, "weights_data", ndim=1, kind="f")
        weights = sp.coo_matrix(
            (data, (rows, cols)), shape=(len(users.entities), len(items.entities))
        )
        serving = artifact.groups["serving"]
        training = TrainingData(
            users=users,
            items=items,
            weights=weights,
            seen=SparseRows(serving["seen_indptr"], serving["seen_indices"]),
            popularity=serving["item_popularity"].astype(np.float32),
        )
        lightfm = new_lightfm(config)
        for name in STATE_ARRAYS:
            ndim = 2 if "embedding" in name else 1
            value = artifact.array(GROUP, f"lightfm_{name}", ndim=ndim, kind="f")
            setattr(lightfm, name, np.ascontiguousarray(value, dtype=np.float32))
        if lightfm.item_embeddings.shape[0] != len(items.features) or (
            lightfm.user_embeddings.shape[0] != len(users.features)
        ):
            raise InvalidInputError("embedding rows do not match the feature vocabularies")
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"inconsistent training state: {exc}") from None
    return config, training, lightfm
