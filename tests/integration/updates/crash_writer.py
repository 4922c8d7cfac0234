"""A writer process for the kill -9 test: writes updates, compacts now and then, prints acks.

``python -m tests.integration.updates.crash_writer TABLE.npy FIRST COUNT``: update ``k`` (from
``FIRST``) sets rows ``2k`` and ``2k+1`` to ``k`` with update id ``u<k>``; each line printed
(``k sequence``) is an acknowledgement: the update was durable when it was printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from service.repository.npy_loader import load_npy
from service.updates.compaction import compact_log, fold_into_base
from service.updates.file_log import FileUpdateLog


def main(table: Path, first: int, count: int) -> None:
    log = FileUpdateLog.for_weights(load_npy(table))
    dim = log.shape.dim
    for k in range(first, first + count):
        result = log.write(np.array([2 * k, 2 * k + 1]), np.full((2, dim), k, np.float32), f"u{k}")
        sys.stdout.write(f"{k} {result.sequence}\n")
        sys.stdout.flush()
        if k % 5 == 0:
            compact_log(log)
        if k % 11 == 0:
            fold_into_base(log)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
