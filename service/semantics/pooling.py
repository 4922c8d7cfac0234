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
    return (sums / counts).astype(np.float32)
