"""Scoring over the int8 snapshot with a bounded cache of dequantised rows.

The snapshot keeps item vectors as int8 plus a scale per row. Scoring needs float32;
dequantised blocks of rows are kept in a cachetools LRU cache whose size is measured in
bytes, so the device's memory budget bounds it (blocks evicted are rebuilt on demand).
"""

from __future__ import annotations

import threading
from functools import cached_property

import numpy as np
import numpy.typing as npt
from cachetools import LRUCache

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.filters import FeatureIndex
from shelfrank.core.snapshot import Snapshot

BLOCK_ROWS = 4096
FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]


class EdgeTable:
    def __init__(self, snapshot: Snapshot, memory_budget_bytes: int) -> None:
        if (
            isinstance(memory_budget_bytes, bool)
            or not isinstance(memory_budget_bytes, int)
            or memory_budget_bytes < 0
        ):
            raise InvalidInputError(
                f"memory_budget_bytes: must be an int >= 0, got {memory_budget_bytes!r}"
            )
        self.snapshot = snapshot
        self._cache: LRUCache[int, FloatArray] = LRUCache(
            maxsize=max(1, memory_budget_bytes), getsizeof=lambda block: block.nbytes
        )
        self._lock = threading.Lock()

    def _block(self, index: int) -> FloatArray:
        with self._lock:
            block = self._cache.get(index)
        if block is None:
            start, stop = index * BLOCK_ROWS, min((index + 1) * BLOCK_ROWS, len(self.snapshot))
            block = (
                self.snapshot.vectors[start:stop].astype(np.float32)
                * self.snapshot.scales[start:stop, None]
            )
            if block.nbytes <= self._cache.maxsize:
                with self._lock:
                    self._cache[index] = block
        return block

    @cached_property
    def features(self) -> FeatureIndex:
        """The snapshot's item tokens as an inverted index (filters, per-feature caps)."""
        snap = self.snapshot
        return FeatureIndex(
            snap.token_vocabulary, snap.item_tokens.indptr, snap.item_tokens.indices, len(snap)
        )

    def cached_bytes(self) -> int:
        with self._lock:
            return int(self._cache.currsize)

    def rows(self, rows: IndexArray) -> FloatArray:
        """Dequantised vectors of ``rows`` (no caching: candidate sets are small)."""
        snap = self.snapshot
        return (snap.vectors[rows].astype(np.float32) * snap.scales[rows, None]).astype(np.float32)

    def scores(self, user_vector: FloatArray, user_bias: float) -> FloatArray:
        """user · item + item bias + user bias for every item."""
        out = np.empty(len(self.snapshot), dtype=np.float32)
        for index in range((len(self.snapshot) + BLOCK_ROWS - 1) // BLOCK_ROWS):
            start = index * BLOCK_ROWS
            block = self._block(index)
            out[start : start + block.shape[0]] = block @ user_vector
        out += self.snapshot.biases
        out += np.float32(user_bias)
        return out
