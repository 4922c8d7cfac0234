"""A worker's side of update-log retention: it marks the logs of the versions it serves, then
sweeps the repository of the others (``LogRetention``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from service.caches.row_text_cache import RowTextCache
from service.repository.npy_loader import load_npy
from service.tables.log_retention import MARKS_PER_GRACE, LogRetention
from service.tables.table_updates import file_updates
from service.updates.file_log import FileUpdateLog

ROWS, DIM = 64, 4
GRACE = 3600.0


def _aged(folder: Path) -> None:
    past = time.time() - 2 * GRACE
    for path in [folder, *folder.iterdir()]:
        os.utime(path, (past, past))


def test_a_served_old_version_keeps_its_log_until_no_worker_serves_it(tmp_path: Path) -> None:
    table = tmp_path / "t.npy"
    np.save(table, np.zeros((ROWS, DIM), np.float32))
    weights = load_npy(table)
    _, updates = file_updates("t", weights, RowTextCache(1 << 20))
    assert updates is not None
    updates.log.write(np.array([1]), np.ones((1, DIM), np.float32))
    np.save(table, np.ones((ROWS + 1, DIM), np.float32))  # a new version on disk
    old_log = updates.log.folder
    _aged(old_log)
    served = [SimpleNamespace(name="t", updates=updates)]
    retention = LogRetention(tmp_path, GRACE, lambda: served)  # type: ignore[arg-type, return-value]
    assert retention.interval == GRACE / MARKS_PER_GRACE
    assert asyncio.run(retention.run_once()) == []  # this worker still serves it: marked
    assert old_log.exists()
    served.clear()  # the worker switched to the new version
    _aged(old_log)
    assert asyncio.run(retention.run_once()) == [old_log]
    new_log = FileUpdateLog.for_weights(load_npy(table)).folder
    assert not old_log.exists() and new_log.parent.exists()


def test_the_task_starts_and_stops(tmp_path: Path) -> None:
    async def start_and_close() -> None:
        retention = LogRetention(tmp_path, GRACE, list).start()
        await asyncio.sleep(0)
        await retention.close()

    asyncio.run(start_and_close())
