"""The edge snapshot: a compact, checksummed copy of what a device needs to recommend.

Contents: item ids, item vectors quantised to int8 with one float32 scale per row
(``vector ~= q * scale``), item biases, item popularity (for users without a vector), the
item feature tokens (for filters), and the device user's own vector and bias. A
snapshot is identified by ``version``; a *delta* from version A to B carries only the
rows that are new or changed in B and the ids deleted since A, so a device that has A
reaches B by moving a small fraction of the bytes.

On disk and on the wire a snapshot is the core artifact format (``manifest.json`` +
``snapshot.npz``, sha256-verified, no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shelfrank.core.artifact import Artifact, read_artifact, write_artifact
from shelfrank.core.errors import InvalidInputError, ModelFileError
from shelfrank.core.ids import IdMap
from shelfrank.core.quantize import dequantize as dequantize  # re-exported
from shelfrank.core.quantize import quantize
from shelfrank.core.serving import ServingModel, SparseRows
from shelfrank.core.strings import decode_strings, encode_strings

SNAPSHOT_FORMAT = "shelfrank-edge-snapshot"
# 2: per-item availability, "new" flag and add time; deltas carry availability flips.
SNAPSHOT_FORMAT_VERSION = 2
GROUP = "snapshot"

FloatArray = npt.NDArray[np.float32]
Int8Array = npt.NDArray[np.int8]
BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Snapshot:
    version: str
    model_version: str
    item_ids: IdMap
    vectors: Int8Array
    scales: FloatArray
    biases: FloatArray
    popularity: FloatArray
    token_vocabulary: IdMap
    item_tokens: SparseRows
    user_id: str = ""
    user_vector: FloatArray | None = None
    user_bias: float = 0.0
    # Per item: recommendable (False: made unavailable on the server), new (may take
    # exploration slots: not trained, or never interacted with) and when it was added to
    # the catalogue (unix ms; 0 unknown). None: all available / none new / unknown.
    available: BoolArray | None = None
    new_items: BoolArray | None = None
    added_ms: Int64Array | None = None

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("available", "new_items", "added_ms"):
            values = getattr(self, name)
            if values is not None and values.shape != (n,):
                raise InvalidInputError(f"{name}: expected {n} values")
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise InvalidInputError(f"vectors: expected {n} rows, got shape {self.vectors.shape}")
        for name in ("scales", "biases", "popularity"):
            if getattr(self, name).shape != (n,):
                raise InvalidInputError(f"{name}: expected {n} values")
        if self.item_tokens.n_rows != n:
            raise InvalidInputError("item_tokens: one row per item expected")
        if self.user_vector is not None and self.user_vector.shape != (self.dim,):
            raise InvalidInputError(f"user_vector: expected {self.dim} values")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    def tokens_of(self, row: int) -> tuple[str, ...]:
        return tuple(self.token_vocabulary.id_of(int(c)) for c in self.item_tokens.row(row))

    def available_mask(self) -> BoolArray:
        return np.ones(len(self), bool) if self.available is None else self.available

    def new_mask(self) -> BoolArray:
        return np.zeros(len(self), bool) if self.new_items is None else self.new_items

    def added(self) -> Int64Array:
        return np.zeros(len(self), np.int64) if self.added_ms is None else self.added_ms

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.vectors, self.scales, self.biases, self.popularity)))


@dataclass(frozen=True, kw_only=True)
class SnapshotDelta:
    """Rows new or changed between ``base_version`` and ``version``, and deleted ids."""

    base_version: str
    version: str
    model_version: str
    upserts: Snapshot  # a snapshot holding only the changed rows (and the user's vector)
    deleted: tuple[str, ...]
    # Rows otherwise unchanged whose availability flipped: a few bytes each, not a row.
    made_unavailable: tuple[str, ...] = ()
    made_available: tuple[str, ...] = ()


def build_snapshot(
    version: str,
    model_version: str,
    item_ids: IdMap,
    vectors: FloatArray,
    biases: FloatArray,
    popularity: FloatArray,
    token_vocabulary: IdMap,
    item_tokens: SparseRows,
    *,
    user_id: str = "",
    user_vector: FloatArray | None = None,
    user_bias: float = 0.0,
    available: BoolArray | None = None,
    new_items: BoolArray | None = None,
    added_ms: Int64Array | None = None,
) -> Snapshot:
    quantized, scales = quantize(np.ascontiguousarray(vectors, dtype=np.float32))
    return Snapshot(
        version,
        model_version,
        item_ids,
        quantized,
        scales,
        biases.astype(np.float32),
        popularity.astype(np.float32),
        token_vocabulary,
        item_tokens,
        user_id,
        user_vector,
        user_bias,
        available,
        new_items,
        added_ms,
    )


def snapshot_of(
    model: ServingModel,
    version: str,
    *,
    user_id: str = "",
    user_vector: FloatArray | None = None,
    user_bias: float = 0.0,
    available: BoolArray | None = None,
    new_items: BoolArray | None = None,
    added_ms: Int64Array | None = None,
) -> Snapshot:
    """The snapshot of a serving model's item table (and optionally one user's vector)."""
    return build_snapshot(
        version,
        model.model_version,
        model.item_ids,
        model.items.item_vectors,
        model.items.item_biases,
        model.item_popularity,
        model.item_token_embeddings.vocabulary,
        model.item_tokens,
        user_id=user_id,
        user_vector=user_vector,
        user_bias=user_bias,
        available=available,
        new_items=new_items,
        added_ms=added_ms,
    )


def _take(snapshot: Snapshot, rows: npt.NDArray[np.int64], *, version: str) -> Snapshot:
    """A snapshot of the given rows only (tokens re-indexed into a compact vocabulary)."""
    ids = IdMap(snapshot.item_ids.id_of(int(r)) for r in rows)
    vocabulary = IdMap()
    lists = [
        [
            vocabulary.add(snapshot.token_vocabulary.id_of(int(c)))
            for c in snapshot.item_tokens.row(int(r))
        ]
        for r in rows
    ]
    indptr = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum([len(t) for t in lists], out=indptr[1:])
    indices = np.array([c for t in lists for c in t], dtype=np.int64)
    return Snapshot(
        version,
        snapshot.model_version,
        ids,
        snapshot.vectors[rows],
        snapshot.scales[rows],
        snapshot.biases[rows],
        snapshot.popularity[rows],
        vocabulary,
        SparseRows(indptr, indices),
        snapshot.user_id,
        snapshot.user_vector,
        snapshot.user_bias,
        None if snapshot.available is None else snapshot.available[rows],
        None if snapshot.new_items is None else snapshot.new_items[rows],
        None if snapshot.added_ms is None else snapshot.added_ms[rows],
    )


def diff(old: Snapshot, new: Snapshot) -> SnapshotDelta:
    """What a device holding ``old`` needs to reach ``new``."""
    if old.vectors.shape[1] != new.vectors.shape[1]:
        raise InvalidInputError(
            f"snapshot delta: {old.version} has {old.vectors.shape[1]} dimensions, "
            f"{new.version} {new.vectors.shape[1]}: send the whole snapshot"
        )
    old_rows = np.array(
        [old.item_ids.get(item) if item in old.item_ids else -1 for item in new.item_ids],
        dtype=np.int64,
    )
    known = old_rows >= 0
    same = np.zeros(len(new), dtype=bool)
    matched = np.flatnonzero(known)
    source = old_rows[matched]
    same[matched] = (
        np.all(old.vectors[source] == new.vectors[matched], axis=1)
        & (old.scales[source] == new.scales[matched])
        & (old.biases[source] == new.biases[matched])
        & (old.popularity[source] == new.popularity[matched])
        & (old.new_mask()[source] == new.new_mask()[matched])
        & (old.added()[source] == new.added()[matched])
    )
    for row in np.flatnonzero(same).tolist():  # numbers equal: compare the tokens too
        if old.tokens_of(int(old_rows[row])) != new.tokens_of(row):
            same[row] = False
    changed = np.flatnonzero(~same)
    deleted = tuple(item for item in old.item_ids if item not in new.item_ids)
    upserts = _take(new, changed.astype(np.int64), version=new.version)
    kept = np.flatnonzero(same)
    flipped = kept[old.available_mask()[old_rows[kept]] != new.available_mask()[kept]]
    now_available = new.available_mask()[flipped]
    ids = new.item_ids
    return SnapshotDelta(
        base_version=old.version,
        version=new.version,
        model_version=new.model_version,
        upserts=upserts,
        deleted=deleted,
        made_unavailable=tuple(ids.id_of(int(r)) for r in flipped[~now_available]),
        made_available=tuple(ids.id_of(int(r)) for r in flipped[now_available]),
    )


def apply_delta(base: Snapshot, delta: SnapshotDelta) -> Snapshot:
    """The snapshot ``delta.version`` from ``base`` (which must be ``delta.base_version``)."""
    if base.version != delta.base_version:
        raise InvalidInputError(
            f"delta is from {delta.base_version!r}, the device has {base.version!r}"
        )
    removed = set(delta.deleted)
    keep = np.array(
        [r for r, item in enumerate(base.item_ids) if item not in removed], dtype=np.int64
    )
    kept = _take(base, keep, version=base.version)
    up = delta.upserts
    ids = kept.item_ids.copy()
    vocabulary = kept.token_vocabulary.copy()
    token_lists = [list(kept.item_tokens.row(r)) for r in range(len(kept))]
    vectors, scales = kept.vectors.copy(), kept.scales.copy()
    biases, popularity = kept.biases.copy(), kept.popularity.copy()
    available, new_items = kept.available_mask().copy(), kept.new_mask().copy()
    added = kept.added().copy()
    up_available, up_new, up_added = up.available_mask(), up.new_mask(), up.added()
    extra: list[int] = []
    for row, item in enumerate(up.item_ids):
        tokens = [vocabulary.add(t) for t in up.tokens_of(row)]
        existing = ids.get(item)
        if existing is None:
            ids.add(item)
            token_lists.append(tokens)
            extra.append(row)
        else:
            vectors[existing], scales[existing] = up.vectors[row], up.scales[row]
            biases[existing], popularity[existing] = up.biases[row], up.popularity[row]
            available[existing], new_items[existing] = up_available[row], up_new[row]
            added[existing] = up_added[row]
            token_lists[existing] = tokens
    for flag, flipped in ((False, delta.made_unavailable), (True, delta.made_available)):
        for item in flipped:
            where = ids.get(item)
            if where is None or where >= available.size:
                raise InvalidInputError(f"delta: availability of {item!r}, not on the device")
            available[where] = flag
    rows = np.array(extra, dtype=np.int64)
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in token_lists], out=indptr[1:])
    return Snapshot(
        delta.version,
        delta.model_version,
        ids,
        np.concatenate([vectors, up.vectors[rows]]),
        np.concatenate([scales, up.scales[rows]]),
        np.concatenate([biases, up.biases[rows]]),
        np.concatenate([popularity, up.popularity[rows]]),
        vocabulary,
        SparseRows(indptr, np.array([c for t in token_lists for c in t], dtype=np.int64)),
        up.user_id,
        up.user_vector,
        up.user_bias,
        _unless_default(np.concatenate([available, up_available[rows]]), True),
        _unless_default(np.concatenate([new_items, up_new[rows]]), False),
        _unless_default(np.concatenate([added, up_added[rows]]), 0),
    )


def _unless_default(values: npt.NDArray[Any], default: bool | int) -> npt.NDArray[Any] | None:
    """None when every value is the default (the snapshot then stores nothing)."""
    return None if bool(np.all(values == default)) else values


# -- files ----------------------------------------------------------------------------------------
def _arrays(snapshot: Snapshot) -> dict[str, npt.NDArray[Any]]:
    ids_blob, ids_offsets = encode_strings(snapshot.item_ids.ids)
    vocab_blob, vocab_offsets = encode_strings(snapshot.token_vocabulary.ids)
    arrays: dict[str, npt.NDArray[Any]] = {
        "item_ids_blob": ids_blob,
        "item_ids_offsets": ids_offsets,
        "vectors": snapshot.vectors,
        "scales": snapshot.scales,
        "biases": snapshot.biases,
        "popularity": snapshot.popularity,
        "token_vocab_blob": vocab_blob,
        "token_vocab_offsets": vocab_offsets,
        "item_tokens_indptr": snapshot.item_tokens.indptr,
        "item_tokens_indices": snapshot.item_tokens.indices,
    }
    if snapshot.user_vector is not None:
        arrays["user_vector"] = snapshot.user_vector.astype(np.float32)
    if snapshot.available is not None:
        arrays["available"] = snapshot.available.astype(np.uint8)
    if snapshot.new_items is not None:
        arrays["new_items"] = snapshot.new_items.astype(np.uint8)
    if snapshot.added_ms is not None:
        arrays["added_ms"] = snapshot.added_ms.astype(np.int64)
    return arrays


def write_snapshot(
    directory: str | Path,
    snapshot: Snapshot,
    *,
    base_version: str = "",
    deleted: Sequence[str] = (),
    made_unavailable: Sequence[str] = (),
    made_available: Sequence[str] = (),
) -> dict[str, Any]:
    """Write a full snapshot, or (with ``base_version``) the upserts of a delta."""
    arrays = _arrays(snapshot)
    for name, ids in (
        ("deleted", deleted),
        ("made_unavailable", made_unavailable),
        ("made_available", made_available),
    ):
        arrays[f"{name}_blob"], arrays[f"{name}_offsets"] = encode_strings(list(ids))
    metadata = {
        "version": snapshot.version,
        "model_version": snapshot.model_version,
        "base_version": base_version,
        "user_id": snapshot.user_id,
        "user_bias": snapshot.user_bias,
        "items": len(snapshot),
        "dim": snapshot.dim,
    }
    return write_artifact(
        directory,
        kind=SNAPSHOT_FORMAT,
        format_version=SNAPSHOT_FORMAT_VERSION,
        metadata=metadata,
        groups={GROUP: arrays},
        compress=True,  # snapshots travel over mobile networks; ids and offsets shrink
    )


def write_delta(directory: str | Path, delta: SnapshotDelta) -> dict[str, Any]:
    return write_snapshot(
        directory,
        delta.upserts,
        base_version=delta.base_version,
        deleted=delta.deleted,
        made_unavailable=delta.made_unavailable,
        made_available=delta.made_available,
    )


def _snapshot_from(artifact: Artifact) -> tuple[Snapshot, str, dict[str, tuple[str, ...]]]:
    manifest = artifact.manifest
    path = artifact.directory / f"{GROUP}.npz"

    def arr(name: str, ndim: int, kind: str) -> npt.NDArray[Any]:
        return artifact.array(GROUP, name, ndim=ndim, kind=kind)

    try:
        present = artifact.groups.get(GROUP, {})
        user_vector = None
        if "user_vector" in present:
            user_vector = np.asarray(arr("user_vector", 1, "f"), dtype=np.float32)
        flags = {
            name: np.asarray(arr(name, 1, "u"), dtype=bool) if name in present else None
            for name in ("available", "new_items")
        }
        added_ms = np.asarray(arr("added_ms", 1, "i"), np.int64) if "added_ms" in present else None
        snapshot = Snapshot(
            version=str(manifest["version"]),
            model_version=str(manifest["model_version"]),
            item_ids=IdMap(
                decode_strings(arr("item_ids_blob", 1, "u"), arr("item_ids_offsets", 1, "i"))
            ),
            vectors=np.asarray(arr("vectors", 2, "i"), dtype=np.int8),
            scales=np.asarray(arr("scales", 1, "f"), dtype=np.float32),
            biases=np.asarray(arr("biases", 1, "f"), dtype=np.float32),
            popularity=np.asarray(arr("popularity", 1, "f"), dtype=np.float32),
            token_vocabulary=IdMap(
                decode_strings(arr("token_vocab_blob", 1, "u"), arr("token_vocab_offsets", 1, "i"))
            ),
            item_tokens=SparseRows(
                arr("item_tokens_indptr", 1, "i"), arr("item_tokens_indices", 1, "i")
            ),
            user_id=str(manifest.get("user_id", "")),
            user_vector=user_vector,
            user_bias=float(manifest.get("user_bias", 0.0)),
            available=flags["available"],
            new_items=flags["new_items"],
            added_ms=added_ms,
        )
        lists = {
            name: tuple(decode_strings(arr(f"{name}_blob", 1, "u"), arr(f"{name}_offsets", 1, "i")))
            if f"{name}_blob" in present
            else ()
            for name in ("deleted", "made_unavailable", "made_available")
        }
        if snapshot.item_tokens.indices.size and (
            snapshot.item_tokens.indices.max() >= len(snapshot.token_vocabulary)
        ):
            raise InvalidInputError("item_tokens refer to tokens outside the vocabulary")
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"inconsistent snapshot: {exc}") from None
    return snapshot, str(manifest.get("base_version", "")), lists


def read_snapshot(directory: str | Path) -> Snapshot:
    snapshot, base, _ = _snapshot_from(
        read_artifact(directory, kind=SNAPSHOT_FORMAT, max_version=SNAPSHOT_FORMAT_VERSION)
    )
    if base:
        raise ModelFileError(directory, f"is a delta from {base!r}, not a full snapshot")
    return snapshot


def read_snapshot_or_delta(directory: str | Path) -> Snapshot | SnapshotDelta:
    snapshot, base, lists = _snapshot_from(
        read_artifact(directory, kind=SNAPSHOT_FORMAT, max_version=SNAPSHOT_FORMAT_VERSION)
    )
    if not base:
        return snapshot
    return SnapshotDelta(
        base_version=base,
        version=snapshot.version,
        model_version=snapshot.model_version,
        upserts=snapshot,
        deleted=lists["deleted"],
        made_unavailable=lists["made_unavailable"],
        made_available=lists["made_available"],
    )
