"""What a loader hands on: the table's rows as an array, and where they came from."""

from __future__ import annotations

import hashlib
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import TableLoadError

SERVABLE_DTYPES = (np.dtype("float16"), np.dtype("float32"), np.dtype("float64"))


@dataclass(frozen=True)
class TableWeights:
    """A read-only ``(rows, dim)`` float matrix, usually memory-mapped, plus provenance."""

    array: np.ndarray
    format: str  # "npy" | "onnx"
    path: Path
    version: str
    # Where the rows lie byte for byte in a file (path, offset), when they do: lets
    # onnxruntime map the same file instead of copying the table into its arena.
    file_region: tuple[Path, int] | None = None
    # int8 tables: per-row float32 scales (rows are codes * scale).
    scales: np.ndarray | None = None

    @property
    def stored_dtype(self) -> str:
        return "int8" if self.scales is not None else str(self.array.dtype)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float32 (dequantised for int8 tables)."""
        rows = np.asarray(self.array[start:stop])
        if self.scales is not None:
            scaled: np.ndarray = (
                rows.astype(np.float32) * np.asarray(self.scales[start:stop])[:, None]
            )
            return scaled
        return rows.astype(np.float32, copy=False)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` as float32 (dequantised for int8 tables)."""
        rows = np.take(self.array, ids, axis=0)
        if self.scales is not None:
            scaled: np.ndarray = rows.astype(np.float32) * np.take(self.scales, ids)[:, None]
            return scaled
        return rows.astype(np.float32, copy=False)

    def warm_up(self) -> int:
        """Fault in every page of the rows (and scales) now; the bytes read.

        ``madvise(MADV_WILLNEED)`` starts the kernel's read-ahead over a mapped file, then one
        byte per page is read so every page is resident before the first request. Blocking:
        run it off the event loop.
        """
        touched = 0
        for array in (self.array, self.scales):
            if array is None or array.size == 0:
                continue
            mapping = getattr(array, "_mmap", None)  # np.memmap's mapping of the whole file
            if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_WILLNEED"):
                mapping.madvise(mmap.MADV_WILLNEED)
            flat = np.asarray(array).reshape(-1).view(np.uint8)
            int(flat[:: mmap.PAGESIZE].sum(dtype=np.uint64))  # reads one byte of every page
            touched += flat.nbytes
        return touched

    @property
    def rows(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])


def file_version(*paths: Path) -> str:
    """A short version string that changes whenever a file's size or mtime does."""
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def check_servable(array: np.ndarray, source: Path, allow_int8: bool = False) -> np.ndarray:
    """Reject arrays that cannot be served as an embedding table, naming the reason."""
    if array.ndim != 2:
        raise TableLoadError(f"{source}: table must be 2-D (rows, dim), got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise TableLoadError(f"{source}: table is empty, shape {array.shape}")
    allowed = (*SERVABLE_DTYPES, np.dtype("int8")) if allow_int8 else SERVABLE_DTYPES
    if array.dtype.newbyteorder("=") not in allowed:
        raise TableLoadError(
            f"{source}: table dtype {array.dtype} is not float16, float32 or float64"
        )
    if not array.dtype.isnative:
        raise TableLoadError(f"{source}: table is big-endian; save it little-endian")
    if not array.flags.c_contiguous:
        raise TableLoadError(
            f"{source}: table is not C-contiguous (Fortran order); save np.ascontiguousarray(w)"
        )
    return array


# Rows per finiteness chunk are sized to this many bytes: memory stays bounded (the
# mapping is read once, chunk by chunk) whatever the table's size.
FINITE_CHUNK_BYTES = 32 * 1024 * 1024


def check_finite(array: np.ndarray, source: Path) -> None:
    """Refuse a table holding NaN or Inf, naming the first bad row and column.

    Served, such a value would come back as JSON ``null`` (or poison every pooled or
    renormalised vector). ``min``/``max`` per chunk find any (NaN propagates through
    both; +Inf shows in max, -Inf in min) without a temporary array; only a chunk that
    fails is scanned again to name the place.
    """
    if array.dtype.kind != "f" or array.size == 0:
        return
    row_bytes = max(1, array[:1].nbytes)
    step = max(1, FINITE_CHUNK_BYTES // row_bytes)
    for start in range(0, array.shape[0], step):
        block = np.asarray(array[start : start + step])
        if _all_finite(block):
            continue
        bad = ~np.isfinite(block)
        flat = int(np.argmax(bad))
        row, column = divmod(flat, block[0].size)
        value = block.reshape(block.shape[0], -1)[row, column]
        count = int(bad.sum())
        raise TableLoadError(
            f"{source}: holds non-finite values ({value} first at row {start + row}, "
            f"column {column}; {count} in rows {start}..{start + block.shape[0] - 1}); "
            "NaN and Inf are never served, fix or drop those rows"
        )


def _all_finite(block: np.ndarray) -> bool:
    """True when ``block`` holds no NaN/Inf, without a temporary of floats.

    numpy's float16 min/max are scalar loops (~18 s per GiB); float16's bits say it at
    integer speed: a value is NaN or Inf exactly when all five exponent bits are set.
    """
    if block.dtype == np.float16 and block.flags.c_contiguous:
        magnitude = np.bitwise_and(block.view(np.uint16), np.uint16(0x7FFF))
        return int(magnitude.max()) < 0x7C00
    return bool(np.isfinite(block.min()) and np.isfinite(block.max()))
