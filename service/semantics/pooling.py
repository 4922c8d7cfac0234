"""Pooling of gathered rows per input with whole-array ops (``np.add.reduceat``), no per-input loops."""

from __future__ import annotations

import numpy as np


def segment_starts(lengths: np.ndarray) -> np.ndarray:
    """Offset of each segment's first row in the concatenated rows."""
    return np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)


def segment_sums(rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sum of each segment's rows (float64 accumulation); empty segments give zeros."""
    sums = np.zeros((lengths.size, rows.shape[1]), dtype=np.float64)
    nonempty = lengths > 0
    if nonempty.any():
        starts = segment_starts(lengths)[nonempty]
        sums[nonempty] = np.add.reduceat(rows.astype(np.float64), starts, axis=0)
    return sums


def segment_means(rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mean of each segment's rows as float32; empty segments give zeros."""
    sums = segment_sums(rows, lengths)
    counts = np.maximum(lengths, 1)[:, None]
    means: np.ndarray = (sums / counts).astype(np.float32)  # numpy types this as Any
    return means


def pool_bags(
    rows: np.ndarray, lengths: np.ndarray, weights: np.ndarray | None, mode: str
) -> np.ndarray:
    """``nn.EmbeddingBag`` pooling of each bag's rows (padding ids already left out).

    sum / mean / max as torch; ``sqrtn`` as TF's ``embedding_lookup_sparse``: the weighted sum
    divided by the square root of the sum of squared weights. Empty bags give zeros.
    """
    if mode == "max":
        pooled = np.zeros((lengths.size, rows.shape[1]), dtype=np.float32)
        nonempty = lengths > 0
        if nonempty.any():
            starts = segment_starts(lengths)[nonempty]
            pooled[nonempty] = np.maximum.reduceat(rows, starts, axis=0)
        return pooled
    if weights is None:
        sums = segment_sums(rows, lengths)
        if mode == "sum":
            return sums.astype(np.float32)
        # Annotated: numpy types arithmetic on arrays of unknown dtype as Any.
        if mode == "mean":
            means: np.ndarray = (sums / np.maximum(lengths, 1)[:, None]).astype(np.float32)
            return means
        sqrtn: np.ndarray = (sums / np.sqrt(np.maximum(lengths, 1))[:, None]).astype(np.float32)
        return sqrtn
    # Weights are divided by their peak first: huge weights cannot overflow the products or
    # the squares, and for sqrtn the scale cancels exactly.
    peak = float(np.abs(weights).max()) if weights.size else 0.0
    scale = peak if peak > 0 else 1.0
    unit = weights / scale
    sums = segment_sums(rows * unit[:, None], lengths)
    if mode == "sum":
        return (sums * scale).astype(np.float32)  # may overflow float32: the caller refuses it
    norms = np.sqrt(segment_sums((unit * unit)[:, None], lengths)[:, 0])
    return (sums / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)
