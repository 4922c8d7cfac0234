"""Compact table forms: float16, and int8 with one symmetric scale per row.

int8 layout: ``<name>.npy`` holds the codes (rows x dim, int8) and ``<name>.scales.npy`` the
per-row float32 scales; a row is ``codes * scale``. ``scale = max|row| / 127``, so each element
is off by at most ``scale / 2``. Both files are memory-mapped like any table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCALES_SUFFIX = ".scales.npy"
COMPACT_DTYPES = ("float32", "float16", "int8")


def scales_path(codes: Path) -> Path:
    """Where the scales of an int8 table file lie."""
    return codes.with_name(codes.name[: -len(".npy")] + SCALES_SUFFIX)


def quantize_int8(table: np.ndarray, block_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 codes and float32 scales (blockwise: bounded temporary memory)."""
    rows, dim = table.shape
    codes = np.empty((rows, dim), dtype=np.int8)
    scales = np.empty(rows, dtype=np.float32)
    for start in range(0, rows, block_rows):
        block = np.asarray(table[start : start + block_rows], dtype=np.float32)
        scale = np.abs(block).max(axis=1) / 127.0
        safe = np.where(scale == 0, 1.0, scale)
        codes[start : start + block.shape[0]] = np.clip(np.rint(block / safe[:, None]), -127, 127)
        scales[start : start + block.shape[0]] = scale
    return codes, scales


def dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    rows: np.ndarray = codes.astype(np.float32) * scales[:, None]
    return rows


@dataclass(frozen=True)
class ConversionReport:
    path: Path
    dtype: str
    bytes_before: int
    bytes_after: int
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float  # max |error| / max |row|, per row

    def lines(self) -> list[str]:
        return [
            f"wrote {self.path} ({self.dtype}): {self.bytes_before / 2**20:,.1f} MiB -> "
            f"{self.bytes_after / 2**20:,.1f} MiB ({self.bytes_after / self.bytes_before:.1%})",
            f"reconstruction error: max {self.max_abs_error:.3g}, mean {self.mean_abs_error:.3g}, "
            f"max relative to the row's largest value {self.max_rel_error:.3g}",
        ]


def _staged(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (hidden: never discovered)."""
    return path.with_name(f".{path.name}.converting")


def _write_codes(source: np.ndarray, destination: Path, dtype: str, block_rows: int) -> int:
    """Write the table (and its int8 scales) to their staged names; the bytes written."""
    codes_file = _staged(destination)
    if dtype == "int8":
        codes, scales = quantize_int8(source, block_rows)
        scales_file = _staged(scales_path(destination))
        for path, array in ((codes_file, codes), (scales_file, scales)):
            with path.open("wb") as out:  # a file object: np.save would append ".npy"
                np.save(out, array)
        return codes_file.stat().st_size + scales_file.stat().st_size
    rows, dim = source.shape
    out_array = np.lib.format.open_memmap(codes_file, mode="w+", dtype=dtype, shape=(rows, dim))
    for start in range(0, rows, block_rows):
        out_array[start : start + block_rows] = np.asarray(
            source[start : start + block_rows], dtype=dtype
        )
    out_array.flush()
    del out_array
    return codes_file.stat().st_size


def convert_table(
    source: np.ndarray, destination: Path, dtype: str, block_rows: int = 65536
) -> ConversionReport:
    """Write ``source`` in ``dtype`` to ``destination`` (.npy, plus scales and a .toml)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    rows, dim = source.shape
    written = _write_codes(source, destination, dtype, block_rows)
    toml = destination.with_suffix(".toml")
    lines = [
        line
        for line in (toml.read_text().splitlines() if toml.exists() else [])
        if not line.startswith("dtype")
    ]
    _staged(toml).write_text("\n".join([*lines, f'dtype = "{dtype}"']) + "\n")
    # Served files are never rewritten in place (mapped readers would fault): each is written
    # beside its target under a hidden name and renamed over it, the codes last, so a watcher
    # that sees the new codes sees their scales and options too.
    for final in (scales_path(destination), toml, destination):
        if _staged(final).exists():
            os.replace(_staged(final), final)
    # Error, blockwise against the source.
    stored = np.load(destination, mmap_mode="r")
    stored_scales = np.load(scales_path(destination), mmap_mode="r") if dtype == "int8" else None
    max_abs = max_rel = total = 0.0
    for start in range(0, rows, block_rows):
        original = np.asarray(source[start : start + block_rows], dtype=np.float64)
        block = np.asarray(stored[start : start + block_rows])
        if stored_scales is not None:
            back = dequantize(block, np.asarray(stored_scales[start : start + block_rows]))
        else:
            back = block.astype(np.float32)
        error = np.abs(back.astype(np.float64) - original)
        max_abs = max(max_abs, float(error.max()))
        total += float(error.sum())
        peak = np.abs(original).max(axis=1)
        max_rel = max(max_rel, float((error.max(axis=1) / np.where(peak == 0, 1, peak)).max()))
    before = rows * dim * np.dtype(source.dtype).itemsize
    return ConversionReport(
        destination, dtype, before, written, max_abs, total / (rows * dim), max_rel
    )
