"""Loads ``.npy`` tables memory-mapped: zero copy, start-up time independent of size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.errors import TableLoadError
from service.repository.compact import scales_path
from service.repository.weights import (
    SERVABLE_DTYPES,
    TableWeights,
    check_finite,
    check_servable,
    file_version,
)

NPY_MAGIC = b"\x93NUMPY"


def map_npy(path: Path, what: str = "table") -> np.ndarray:
    """Memory-map an ``.npy`` file read-only, naming why when it is not one.

    The magic is checked first: without it numpy tries the file as a pickle and
    reports "pickled data" for what is simply not an ``.npy`` file.
    """
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
    except FileNotFoundError as exc:
        raise TableLoadError(f"{path}: file not found") from exc
    except OSError as exc:
        raise TableLoadError(f"{path}: cannot read the {what}: {exc}") from exc
    if magic != NPY_MAGIC:
        raise TableLoadError(f"{path}: not an .npy file (it does not start with \\x93NUMPY)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if "bject arrays" in str(exc):
            raise TableLoadError(
                f"{path}: holds pickled (object) data, which is never unpickled"
            ) from exc
        # "mmap length is greater than file size" for truncated files; header errors.
        raise TableLoadError(f"{path}: not a loadable .npy {what}: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise TableLoadError(f"{path}: not a .npy array")
    return array


def load_npy(path: Path, check_values: bool = True) -> TableWeights:
    """Map ``path`` read-only; pickled (object) arrays are refused, never unpickled.

    Every value is checked finite (chunked over the mapping) before the table serves, unless
    ``check_values`` is False: a file this service wrote from checked rows (a compacted base),
    where the scan would read the whole table again in every worker for nothing.
    """
    array = check_servable(map_npy(path), path, allow_int8=True)
    region = (path.resolve(), int(array.offset)) if isinstance(array, np.memmap) else None
    if array.dtype != np.int8:
        if check_values:
            check_finite(array, path)
        return TableWeights(array, "npy", path, file_version(path), region)
    # int8 codes (always finite): the per-row scales lie beside them.
    scales_file = scales_path(path)
    try:
        scales = map_npy(scales_file, "scales file")
    except TableLoadError as exc:
        raise TableLoadError(f"{path}: int8 table without readable scales: {exc}") from exc
    if scales.shape != (array.shape[0],) or scales.dtype.newbyteorder("=") not in SERVABLE_DTYPES:
        raise TableLoadError(
            f"{scales_file}: scales must be one float per row, got {scales.shape} {scales.dtype}"
        )
    check_finite(scales.reshape(-1, 1), scales_file)
    return TableWeights(
        array, "npy", path, file_version(path, scales_file), None, np.asarray(scales, np.float32)
    )
