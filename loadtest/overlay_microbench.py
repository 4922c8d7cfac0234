"""What the row-update overlay adds to a gather, in process: ``take`` against ``take`` + patch.

    python3 loadtest/overlay_microbench.py [--updated 100000] [--rounds 16]

Over the 1,000,000 x 128 float32 bench table (``bench_data/``, memory-mapped as served), with
``--updated`` distinct rows updated in one refresh: each round times 400 requests of fresh
uniform ids per variant, interleaved (the machine's other load weighs on each alike); prints
the median microseconds per request for 32 and 1,024 ids, for the dense overlay (tables up to
``DENSE_MAX_ROWS``) and the sorted one (larger tables).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest.bench import make_table  # noqa: E402
from service.updates.delta_files import UpdateFile  # noqa: E402
from service.updates.overlay import OverlayState  # noqa: E402
from service.updates.row_versions import prepare_refresh  # noqa: E402
from service.updates.sorted_rows import SortedState  # noqa: E402

ROWS, DIM = 1_000_000, 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updated", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()
    base = np.load(make_table(ROWS, DIM), mmap_mode="r")
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(ROWS, args.updated, replace=False))
    rows = rng.standard_normal((ids.size, DIM)).astype(np.float32)
    dense = prepare_refresh(None, ROWS, ids, rows, 1).install()
    searched = SortedState.empty(DIM).newer([UpdateFile(1, ids, rows, {}, 0)])

    def patched(state: OverlayState) -> Callable[[np.ndarray], None]:
        def run(q: np.ndarray) -> None:
            state.patch(q, base.take(q, axis=0))

        return run

    variants = {
        "take": lambda q: base.take(q, axis=0),
        "take + dense patch": patched(dense),
        "take + sorted patch": patched(searched),
    }
    print(f"{ROWS:,} x {DIM} float32, {args.updated:,} updated rows; median us per request\n")
    print("| ids | " + " | ".join(variants) + " |\n|---|" + "---:|" * len(variants))
    for k in (32, 1024):
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, run in variants.items():
                batch = [rng.integers(0, ROWS, k) for _ in range(400)]
                started = time.perf_counter()
                for q in batch:
                    run(q)
                times[name].append((time.perf_counter() - started) / len(batch) * 1e6)
        cells = " | ".join(f"{statistics.median(t):.1f}" for t in times.values())
        print(f"| {k:,} | {cells} |")


if __name__ == "__main__":
    main()
