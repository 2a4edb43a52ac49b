"""int8 item vectors: what a device holds, and what diversity compares on every path."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Int8Array = npt.NDArray[np.int8]


def quantize(vectors: FloatArray) -> tuple[Int8Array, FloatArray]:
    """Symmetric per-row int8 quantisation: ``q = round(v / scale)``, ``scale = max|v|/127``."""
    peak = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(vectors.shape[0])
    scales = (peak / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(vectors / safe[:, None]), -127, 127).astype(np.int8)
    return quantized, scales


def dequantize(quantized: Int8Array, scales: FloatArray) -> FloatArray:
    return (quantized.astype(np.float32) * scales[:, None]).astype(np.float32)


def as_on_device(vectors: FloatArray) -> FloatArray:
    """Rows as a device holds them (quantised per row, then dequantised): diversity compares
    items by these on the server, offline and on the device alike, so the three choose
    alike (a per-row operation: the same rows give the same result wherever they are)."""
    return dequantize(*quantize(np.ascontiguousarray(vectors, dtype=np.float32)))


__all__ = ["as_on_device", "dequantize", "quantize"]
