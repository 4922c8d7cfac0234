"""Loads ``.npy`` tables memory-mapped: zero copy, start-up time independent of size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.errors import TableLoadError
from service.repository.compact import scales_path
from service.repository.weights import (
    SERVABLE_DTYPES,
    TableWeights,
    check_servable,
    file_version,
)


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
    array = check_servable(array, path, allow_int8=True)
    region = (path.resolve(), int(array.offset)) if isinstance(array, np.memmap) else None
    if array.dtype != np.int8:
        return TableWeights(array, "npy", path, file_version(path), region)
    # int8 codes: the per-row scales lie beside them.
    scales_file = scales_path(path)
    try:
        scales = np.load(scales_file, mmap_mode="r", allow_pickle=False)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise TableLoadError(
            f"{path}: int8 table without a readable {scales_file.name}: {exc}"
        ) from exc
    if scales.shape != (array.shape[0],) or scales.dtype.newbyteorder("=") not in SERVABLE_DTYPES:
        raise TableLoadError(
            f"{scales_file}: scales must be one float per row, got {scales.shape} {scales.dtype}"
        )
    return TableWeights(
        array, "npy", path, file_version(path, scales_file), None, np.asarray(scales, np.float32)
    )
