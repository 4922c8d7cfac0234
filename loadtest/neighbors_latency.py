"""Latency of exact k-NN on a big table, in-process (figures for the notes).

python loadtest/neighbors_latency.py [--rows 1000000] [--dim 128] [--k 10] [--queries 1,16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtest.bench import make_table
from service.semantics.neighbors import ArrayRows, ExactNeighborIndex


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", default="1,16")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    table = np.load(make_table(args.rows, args.dim), mmap_mode="r")
    index = ExactNeighborIndex(ArrayRows(table))
    started = time.perf_counter()
    index.row_norms()
    print(f"norms of {args.rows:,} rows computed once in {time.perf_counter() - started:.2f} s")
    rng = np.random.default_rng(0)
    for count in (int(q) for q in args.queries.split(",")):
        for metric in ("cosine", "dot", "l2"):
            times = []
            for _ in range(args.repeat):
                ids = rng.integers(0, args.rows, count)
                started = time.perf_counter()
                index.search(np.asarray(table[ids]), args.k, metric, ids)
                times.append(time.perf_counter() - started)
            print(
                f"{count:3d} queries, {metric:6}: median {statistics.median(times) * 1000:7.1f} ms "
                f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}) for k={args.k}"
            )


if __name__ == "__main__":
    main()
