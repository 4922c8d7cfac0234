"""Loads ``.npy`` tables memory-mapped: zero copy, start-up time independent of size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.errors import TableLoadError
from service.repository.weights import TableWeights, check_servable, file_version


def load_npy(path: Path) -> TableWeights:
    """Map ``path`` read-only; pickled (object) arrays are refused, never unpickled."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise TableLoadError(f"{path}: file not found") from exc
    except (ValueError, OSError, EOFError) as exc:
        # numpy says "Object arrays cannot be loaded..." for pickles, "mmap length is
        # greater than file size" for truncated files, and a magic-string error otherwise.
        raise TableLoadError(f"{path}: not a loadable .npy table: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise TableLoadError(f"{path}: not a .npy array")
    array = check_servable(array, path)
    region = (path.resolve(), int(array.offset)) if isinstance(array, np.memmap) else None
    return TableWeights(array, "npy", path, file_version(path), region)
