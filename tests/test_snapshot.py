"""Edge snapshots: quantisation, files, and deltas that rebuild the new snapshot exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfrank.core.errors import ModelFileError
from shelfrank.core.ids import IdMap
from shelfrank.core.serving import SparseRows
from shelfrank.core.snapshot import (
    Snapshot,
    apply_delta,
    build_snapshot,
    dequantize,
    diff,
    quantize,
    read_snapshot,
    read_snapshot_or_delta,
    write_delta,
    write_snapshot,
)

TOKENS = ["c=a", "c=b", "brand=x", "tag=new"]


def make(
    version: str,
    items: dict[str, tuple[np.ndarray, float, tuple[str, ...]]],
    user: np.ndarray | None = None,
) -> Snapshot:
    vocabulary = IdMap(TOKENS)
    lists = [[vocabulary.index(t) for t in tokens] for _, _, tokens in items.values()]
    indptr = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in lists], out=indptr[1:])
    vectors = np.array([v for v, _, _ in items.values()], dtype=np.float32).reshape(len(items), 4)
    return build_snapshot(
        version,
        "m-" + version,
        IdMap(items),
        vectors,
        np.array([b for _, b, _ in items.values()], dtype=np.float32),
        np.array([10 * b for _, b, _ in items.values()], dtype=np.float32),
        vocabulary,
        SparseRows(indptr, np.array([c for t in lists for c in t], dtype=np.int64)),
        user_id="u",
        user_vector=user,
    )


def same(a: Snapshot, b: Snapshot) -> bool:
    order = [a.item_ids.index(i) for i in b.item_ids]
    return (
        sorted(a.item_ids) == sorted(b.item_ids)
        and np.array_equal(a.vectors[order], b.vectors)
        and np.array_equal(a.scales[order], b.scales)
        and np.array_equal(a.biases[order], b.biases)
        and all(a.tokens_of(r) == b.tokens_of(i) for i, r in enumerate(order))
    )


def test_quantisation_error_is_within_half_a_step() -> None:
    vectors = np.random.default_rng(0).normal(size=(100, 64)).astype(np.float32)
    quantized, scales = quantize(vectors)
    assert quantized.dtype == np.int8
    assert np.all(np.abs(dequantize(quantized, scales) - vectors) <= scales[:, None] / 2 + 1e-7)
    zeros, zero_scales = quantize(np.zeros((2, 3), np.float32))
    assert not zeros.any()
    assert not zero_scales.any()


def test_file_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    snapshot = make(
        "v1",
        {f"i{n}": (rng.normal(size=4), 0.1 * n, ("c=a",)) for n in range(5)},
        user=np.ones(4, np.float32),
    )
    write_snapshot(tmp_path / "s", snapshot)
    back = read_snapshot(tmp_path / "s")
    assert same(back, snapshot)
    assert back.user_vector is not None
    assert back.version == "v1"
    data = bytearray((tmp_path / "s" / "snapshot.npz").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "s" / "snapshot.npz").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        read_snapshot(tmp_path / "s")


item_state = st.dictionaries(
    st.sampled_from([f"i{n}" for n in range(12)]),
    st.tuples(
        st.lists(st.floats(-3, 3), min_size=4, max_size=4).map(np.array),
        st.floats(-1, 1),
        st.lists(st.sampled_from(TOKENS), unique=True, max_size=3).map(tuple),
    ),
    max_size=12,
)


@settings(max_examples=30, deadline=None)
@given(item_state, item_state)
def test_delta_rebuilds_the_new_snapshot(old_items: dict, new_items: dict) -> None:  # type: ignore[type-arg]
    old, new = make("a", old_items), make("b", new_items)
    delta = diff(old, new)
    assert same(apply_delta(old, delta), new)
    unchanged = [
        i
        for i in new_items
        if i in old_items and same(make("x", {i: old_items[i]}), make("y", {i: new_items[i]}))
    ]
    assert not set(unchanged) & set(delta.upserts.item_ids)


def test_delta_files_and_wrong_base(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    items = {f"i{n}": (rng.normal(size=4), 0.0, ("c=a",)) for n in range(50)}
    old = make("a", items)
    changed = dict(items)
    changed["i3"] = (rng.normal(size=4), 0.5, ("c=b",))
    changed["new"] = (rng.normal(size=4), 0.0, ("tag=new",))
    del changed["i7"]
    delta = diff(old, make("b", changed))
    assert sorted(delta.upserts.item_ids) == ["i3", "new"]
    assert delta.deleted == ("i7",)
    write_delta(tmp_path / "d", delta)
    loaded = read_snapshot_or_delta(tmp_path / "d")
    assert not isinstance(loaded, Snapshot)
    assert same(apply_delta(old, loaded), make("b", changed))
    with pytest.raises(ModelFileError, match="is a delta"):
        read_snapshot(tmp_path / "d")
    with pytest.raises(ValueError, match="delta is from"):
        apply_delta(make("zzz", items), delta)
