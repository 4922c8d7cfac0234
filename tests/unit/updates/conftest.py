"""A small ``.npy`` table and its update log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.repository.npy_loader import load_npy
from service.repository.weights import TableWeights
from service.updates.file_log import FileUpdateLog

ROWS, DIM = 100, 4


@pytest.fixture
def weights(tmp_path: Path) -> TableWeights:
    table = np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM)
    np.save(tmp_path / "emb.npy", table)
    return load_npy(tmp_path / "emb.npy")


@pytest.fixture
def log(weights: TableWeights) -> FileUpdateLog:
    return FileUpdateLog.for_weights(weights)


def served(weights: TableWeights, log: FileUpdateLog, ids: list[int]) -> np.ndarray:
    """What a fresh process serving ``weights`` with ``log``'s updates answers for ``ids``."""
    chosen = np.array(ids, np.int64)
    rows = weights.take(chosen)
    log.overlay().apply(chosen, rows)
    return rows


def rows_of(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, DIM), value, np.float32)
