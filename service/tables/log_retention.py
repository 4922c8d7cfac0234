"""Every worker keeps the update logs of the file-table versions it serves, and sweeps the rest.

One task per worker (``LogRetention.run``), every quarter of ``update_log_grace_seconds``
(and once at start): marks the log of every file-table version this worker serves
(``retention.mark_served``), then sweeps the repository (``retention.sweep``: the logs of
versions neither current nor touched within the grace are deleted; one worker at a time per
``.updates`` folder, the others skip). Marking four times per grace means a version served
anywhere is never swept; the whole run is a few ``stat`` calls, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from service.tables.served_table import ServedTable
from service.tables.table_updates import FileTableUpdates
from service.updates.retention import mark_served, sweep

log = logging.getLogger(__name__)

MARKS_PER_GRACE = 4


class LogRetention:
    """Marks the logs ``served()`` uses and sweeps ``models`` of the others."""

    def __init__(
        self, models: Path, grace_seconds: float, served: Callable[[], list[ServedTable]]
    ) -> None:
        self.models = models
        self.grace_seconds = grace_seconds
        self.interval = grace_seconds / MARKS_PER_GRACE
        self._served = served
        self._task: asyncio.Task[None] | None = None

    def start(self) -> LogRetention:
        """Start the task (from the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="log-retention")
        return self

    async def run(self) -> None:
        """Mark and sweep now, then every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("row-update log retention failed; tried again later")
            await asyncio.sleep(self.interval)

    async def run_once(self) -> list[Path]:
        """Mark the logs this worker serves, then sweep; the log folders deleted."""
        folders = [
            table.updates.log.folder
            for table in self._served()
            if isinstance(table.updates, FileTableUpdates)
        ]
        return await asyncio.to_thread(self._mark_and_sweep, folders)

    def _mark_and_sweep(self, folders: list[Path]) -> list[Path]:
        for folder in folders:
            mark_served(folder)
        return sweep(self.models, self.grace_seconds)

    async def close(self) -> None:
        """Stop the task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
