"""Approximate candidate search for very large catalogues: faiss HNSW (server only).

Chosen by measurement (``benchmarks/ann_compare.py``, RESULTS.md): of faiss-cpu, hnswlib
and usearch, faiss's HNSW had the best recall at 1M items, and it is the only one that
filters at C++ speed (an id bitmap), so a filtered request never degrades into
over-fetching. On *trained* (low-rank) tables no graph reached recall 0.95 at 1M items,
while the exact pruned search is faster and exact: the ``auto`` policy therefore uses the
index only for large tables that do not prune (high-rank ones, where the graphs do well).

Maximum inner product is reduced to nearest neighbour in L2 (Bachrach et al., 2014): items
``[v, b, sqrt(M^2 - |v|^2 - b^2)]`` and queries ``[u, 1, 0]`` (``M`` the largest item norm),
so the L2 ranking is the score ranking. HNSW graphs over raw inner products recall less.

The index only proposes candidates; :class:`~shelfrank.core.scoring.ScoringTable` scores
them exactly and applies filters and exclusions exactly (and searches exactly when the
candidates cannot fill k).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.scoring import ScoringTable
from shelfrank.core.serving import ServingModel
from shelfrank.server.compiled_blend import COMPILED_KERNEL

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class AnnConfig:
    # M=32, efConstruction=200: smaller graphs or 8-bit storage lost recall at 100k items;
    # efSearch trades latency for recall (RESULTS.md has the curve).
    connectivity: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    build_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("connectivity", "ef_construction", "ef_search", "build_threads"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name}: must be positive, got {getattr(self, name)}")


faiss: Any = _faiss  # its SWIG bindings are only partly typed
_omp_lock = threading.Lock()  # faiss's OpenMP thread count is process-wide


class FaissItemIndex:
    """HNSW over the L2-reduced item table; implements ``core.scoring.CandidateSearch``."""

    def __init__(self, vectors: FloatArray, biases: FloatArray, config: AnnConfig) -> None:
        augmented = np.hstack([vectors, biases[:, None]]).astype(np.float32)
        norms = np.einsum("ij,ij->i", augmented, augmented, dtype=np.float64)
        extra = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0)).astype(np.float32)
        points = np.ascontiguousarray(np.hstack([augmented, extra[:, None]]))
        self.config = config
        self._index: Any = faiss.IndexHNSWFlat(points.shape[1], config.connectivity)
        self._index.hnsw.efConstruction = config.ef_construction
        with _omp_lock:
            faiss.omp_set_num_threads(config.build_threads)
            try:
                self._index.add(points)
            finally:
                # Searches are one query each, on the request's own thread.
                faiss.omp_set_num_threads(1)
        self._index.hnsw.efSearch = config.ef_search
        self._rows = int(points.shape[0])

    @property
    def items(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        """Approximate memory: vectors (66 x float32) plus graph links (2M int32 per row)."""
        dims = int(self._index.d)
        return self._rows * (dims * 4 + 2 * self.config.connectivity * 4)

    def search(self, user_vector: FloatArray, count: int, allowed: BoolArray | None) -> IndexArray:
        query = np.zeros((1, user_vector.size + 2), np.float32)
        query[0, : user_vector.size] = user_vector
        query[0, user_vector.size] = 1.0
        fetch = min(max(count, 1), self._rows)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.config.ef_search, fetch)
        if allowed is not None:
            bitmap = np.packbits(allowed[: self._rows], bitorder="little")
            params.sel = faiss.IDSelectorBitmap(self._rows, faiss.swig_ptr(bitmap))
        _, labels = self._index.search(query, fetch, params=params)
        found = np.asarray(labels[0], dtype=np.int64)
        return found[found >= 0]


SEARCH_MODES = ("auto", "exact", "ann")


@dataclass(frozen=True)
class SearchPolicy:
    """How a served model finds its top k.

    ``exact``: always exact (pruned above 20k items when the table is low-rank, else a full
    scan). ``ann``: candidates from a :class:`FaissItemIndex`, scored exactly. ``auto`` (the
    default): exact unless the table has at least ``ann_min_items`` rows and cannot be
    pruned (then a full scan per request would be too slow). Measured in RESULTS.md:
    trained tables prune so well that exact beats the approximate index at 1M items.

    ``compiled``: the exact pruned search runs in :mod:`.compiled_search` (numba, GIL
    released) rather than numpy; same results, less time holding the interpreter."""

    mode: str = "auto"
    ann: AnnConfig = AnnConfig()
    ann_min_items: int = 500_000
    compiled: bool = True

    def __post_init__(self) -> None:
        if self.mode not in SEARCH_MODES:
            raise InvalidInputError(
                f"search: must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}"
            )
        if self.ann_min_items < 1:
            raise InvalidInputError(f"ann_min_items: must be positive, got {self.ann_min_items}")

    def wants_index(self, items: int, prunable: bool) -> bool:
        if self.mode == "exact":
            return False
        if self.mode == "ann":
            return True
        return items >= self.ann_min_items and not prunable

    def prepare(self, table: ScoringTable) -> None:
        """Attach an approximate index to ``table`` if this policy wants one (before the
        table is published: building takes minutes at 1M items)."""
        if self.wants_index(len(table), table.pruned is not None):
            table.approximate = FaissItemIndex(table.item_vectors, table.item_biases, self.ann)
        if self.compiled:
            table.attach_kernel(COMPILED_KERNEL)
            COMPILED_KERNEL.warm_up(table)

    def warm_up(self, model: ServingModel) -> None:
        """Compile the blended search for ``model`` (its table prepared by :meth:`prepare`)
        before it serves."""
        if self.compiled:
            COMPILED_KERNEL.warm_up_ranking(model)


__all__ = ["SEARCH_MODES", "AnnConfig", "FaissItemIndex", "SearchPolicy"]
