"""Start-up cost of the NaN/Inf check per GiB of table (the figure in docs/api.md).

    python loadtest/finite_check.py [--gib 1] [--dtype float32|float16|float64] [--dir /tmp]

Writes a ``(rows, 256)`` standard-normal table of about ``--gib`` GiB (once), runs the
loader's ``check_finite`` once to warm the page cache, then prints the best of 3 runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.repository.weights import check_finite

DIM = 256
BLOCK = 1 << 16


def write_table(path: Path, dtype: str, gib: float) -> np.ndarray:
    rows = int(gib * 2**30 / (DIM * np.dtype(dtype).itemsize))
    if not path.exists():
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, DIM))
        for start in range(0, rows, BLOCK):
            count = min(BLOCK, rows - start)
            out[start : start + count] = np.random.default_rng(start).standard_normal((count, DIM))
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "float64"))
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    path = args.dir / f"finite-check-{args.dtype}-{args.gib:g}.npy"
    table = write_table(path, args.dtype, args.gib)
    check_finite(table, path)  # warm the page cache
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        check_finite(table, path)
        runs.append(time.perf_counter() - started)
    size = table.nbytes / 2**30
    print(f"{args.dtype}: {size:.2f} GiB in {min(runs):.3f} s = {min(runs) / size:.3f} s per GiB")


if __name__ == "__main__":
    main()
