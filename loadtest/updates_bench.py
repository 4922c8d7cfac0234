"""Row updates of file tables: sustained offline write rate and the overlay's cost per gather.

    python3 loadtest/updates_bench.py [--rows 1000000] [--dim 128] [--seconds 5] [--folder DIR]

1. Offline rate: ``FileUpdateLog.write`` in a loop (each update durable: temp file, fsync,
   rename, folder fsync) with batches of 100 and 1,000 random unique rows, compaction run
   when due after every write as a background task would; rows/s over ``--seconds`` of wall
   time each (fsync waits on the disk, so wall time, not CPU time).
2. ``UpdateOverlay.apply`` on gathered rows of 32 and 1,024 uniform ids, with no update at all
   and with 100,000 updated rows not yet compacted; microseconds per call (CPU time, median
   of repeats), beside the gather (``np.take``) it follows.

Prints markdown tables. The table is written to ``--folder`` (default: a temp folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.repository.npy_loader import load_npy  # noqa: E402
from service.repository.weights import TableWeights  # noqa: E402
from service.updates.compaction import compact_if_due  # noqa: E402
from service.updates.file_log import FileUpdateLog, TableShape  # noqa: E402
from service.updates.overlay import UpdateOverlay  # noqa: E402

UPDATED_ROWS = 100_000


def write_rate(table: Path, weights: TableWeights, batch: int, seconds: float) -> float:
    """Rows per second written (durably) by one offline writer, compaction included."""
    log = FileUpdateLog(table, f"bench-{batch}", TableShape(weights.rows, weights.dim, "float32"))
    rng = np.random.default_rng(batch)
    rows = rng.standard_normal((batch, weights.dim)).astype(np.float32)
    written = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        ids = rng.choice(weights.rows, batch, replace=False)
        written += log.write(ids, rows).rows
        compact_if_due(log)
    return written / (time.perf_counter() - start)


def overlay_with(table: Path, weights: TableWeights, updated: int) -> UpdateOverlay:
    """An overlay holding ``updated`` rows (written as 1,000-row updates, not compacted)."""
    log = FileUpdateLog(
        table, f"overlay-{updated}", TableShape(weights.rows, weights.dim, "float32")
    )
    rng = np.random.default_rng(updated)
    ids = rng.choice(weights.rows, updated, replace=False)
    for start in range(0, updated, 1000):
        chosen = ids[start : start + 1000]
        log.write(chosen, rng.standard_normal((chosen.size, weights.dim)))
    return log.overlay()  # its settled rows indexed densely (a 1M-row table is small enough)


def cpu_us(call: object, repeats: int = 2000) -> float:
    """Median CPU microseconds of ``call()`` over batches of calls."""
    assert callable(call)
    samples = []
    for _ in range(7):
        start = time.process_time()
        for _ in range(repeats):
            call()
        samples.append((time.process_time() - start) / repeats * 1e6)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="updates-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "bench.npy"
    rng = np.random.default_rng(0)
    np.save(table, rng.standard_normal((args.rows, args.dim), dtype=np.float32))
    weights = load_npy(table)
    print(f"table {args.rows} x {args.dim} float32 in {folder}\n")
    print("| batch (rows) | offline rows/s | updates/s |\n| ---: | ---: | ---: |")
    for batch in (100, 1000):
        rate = write_rate(table, weights, batch, args.seconds)
        print(f"| {batch:,} | {rate:,.0f} | {rate / batch:,.0f} |")
    print("\n| ids | updated rows | gather us | apply us | apply / gather |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for updated in (0, min(UPDATED_ROWS, args.rows // 2)):
        overlay = overlay_with(table, weights, updated)
        for size in (32, 1024):
            print(apply_row(weights, overlay, rng.integers(0, args.rows, size), updated))


def apply_row(weights: TableWeights, overlay: UpdateOverlay, ids: np.ndarray, updated: int) -> str:
    """One line of the apply table: the gather's and the overlay's cost on ``ids``."""
    rows = weights.take(ids)
    gather = cpu_us(lambda: weights.take(ids), 500)
    apply = cpu_us(lambda: overlay.apply(ids, rows))
    return f"| {ids.size:,} | {updated:,} | {gather:.1f} | {apply:.2f} | {apply / gather:.2f} |"


if __name__ == "__main__":
    main()
