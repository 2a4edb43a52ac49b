"""Pickle-free storage of string arrays inside ``.npz`` files.

Strings are stored as one UTF-8 byte blob plus an offsets array, which is compact for
millions of ids and loads with ``allow_pickle=False``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError


def encode_strings(values: Sequence[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Return ``(blob, offsets)`` with ``offsets[i]:offsets[i+1]`` the bytes of value i."""
    encoded = [value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum([len(item) for item in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return blob, offsets


def decode_strings(blob: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> list[str]:
    """Inverse of :func:`encode_strings`; raises InvalidInputError on inconsistent arrays."""
    if blob.ndim != 1 or offsets.ndim != 1 or offsets.size == 0:
        raise InvalidInputError("string table must be a 1-d blob and a non-empty 1-d offsets array")
    if offsets[0] != 0 or offsets[-1] != blob.size or np.any(np.diff(offsets) < 0):
        raise InvalidInputError("string table offsets are not monotonic within the blob")
    raw = blob.tobytes()
    bounds = offsets.tolist()
    return [raw[start:end].decode("utf-8") for start, end in itertools.pairwise(bounds)]
