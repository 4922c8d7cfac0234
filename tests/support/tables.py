"""Test tables written into a model repository folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def random_table(rows: int, dim: int, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(dtype)


def write_npy(folder: Path, name: str, table: np.ndarray, options: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.npy"
    np.save(path, table)
    if options is not None:
        (folder / f"{name}.toml").write_text(options)
    return path
