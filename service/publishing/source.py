"""The table file a push reads: its rows as the service serves them, and their version."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.errors import TableLoadError
from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.weights import TableWeights

RowBlock = Callable[[int, int], np.ndarray]
"""``block(start, stop)``: rows ``start:stop`` of a table, as one contiguous array."""


def load_table_file(path: Path) -> TableWeights:
    """A table file as the loaders read it (``.npy`` memory-mapped, ``.onnx`` initializer)."""
    if path.suffix == ".onnx":
        return load_onnx(path)
    if path.suffix == ".npy":
        return load_npy(path)
    raise TableLoadError(f"{path}: push takes a .npy or .onnx table")


def served_rows(weights: TableWeights) -> tuple[RowBlock, str]:
    """Rows as the service serves them: float tables as stored, int8 ones dequantised."""
    if weights.scales is not None:
        return weights.block, "float32"
    array = weights.array
    return (lambda start, stop: np.ascontiguousarray(array[start:stop])), str(array.dtype)


def table_version(block: RowBlock, rows: int, dtype: str) -> str:
    """A content hash of the rows (16 hex digits), read chunk by chunk."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{rows}:{dtype}:".encode())
    step = 65536
    for start in range(0, rows, step):
        digest.update(block(start, min(rows, start + step)).tobytes())
    return digest.hexdigest()
