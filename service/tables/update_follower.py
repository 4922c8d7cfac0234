"""Every worker follows the row updates of every table it serves, and compacts file logs.

One task per worker (``UpdateFollower.run``): every ``FOLLOW_SECONDS`` each served table's
updates are polled -- a file table costs one ``stat`` of its log folder unless it changed; a
Redis table's feed is started once and then runs by itself. So an update written by any
worker, process or offline command is served here within about ``FOLLOW_SECONDS`` plus the
time to read it. A file overlay that fell behind a compacted base (``OverlayStale``) reloads
its table in this worker.

Every ``COMPACT_SECONDS`` the follower also runs ``compaction.compact_if_due`` for each file
table -- in at most one process at a time per log (a non-blocking lock: the others skip
rather than queue), off the event loop. Compaction changes no answer, version or sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from service.tables.served_table import ServedTable
from service.tables.table_updates import FileTableUpdates, TableUpdates
from service.updates.catch_up import OverlayStale
from service.updates.compaction import compact_if_due, held_alone
from service.updates.file_log import FileUpdateLog
from service.updates.layout import logs_of

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 0.1
COMPACT_SECONDS = 1.0
COMPACTOR_LOCK = "compactor.lock"


class UpdateFollower:
    """Polls the updates of ``tables()``; ``reload`` loads a table again in this worker."""

    def __init__(
        self,
        tables: Callable[[], list[ServedTable]],
        reload: Callable[[str], object],
        interval: float = FOLLOW_SECONDS,
    ) -> None:
        self._tables = tables
        self._reload = reload
        self.interval = interval
        # By the updates object: every version has its own (two tables may share a name and
        # version for a moment, a pinned Redis version made current).
        self._followed: dict[int, TableUpdates] = {}
        self._task: asyncio.Task[None] | None = None
        self._compacting: asyncio.Task[None] | None = None

    def start(self) -> UpdateFollower:
        """Start following (from the running loop)."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self.run(), name="update-follower")
        self._compacting = loop.create_task(self.compact_forever(), name="update-compactor")
        return self

    async def run(self) -> None:
        """Poll forever."""
        while True:
            await asyncio.sleep(self.interval)
            await self.poll_once()

    async def poll_once(self) -> None:
        """Poll every served table's updates once; stop following replaced ones."""
        served: dict[int, TableUpdates] = {}
        for table in self._tables():
            updates = table.updates
            if updates is None:
                continue
            served[id(updates)] = updates
            try:
                await updates.poll()
            except OverlayStale as exc:
                log.info(
                    "table %s: updates folded into a newer base; reloading: %s", table.name, exc
                )
                await self._reload_quietly(table.name)
            except Exception:
                log.exception("table %s: following its updates failed", table.name)
        for key, updates in list(self._followed.items()):
            if served.get(key) is not updates:
                await updates.close()
        self._followed = served

    async def _reload_quietly(self, name: str) -> None:
        try:
            result = self._reload(name)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("table %s: reload after a compaction failed", name)

    async def compact_forever(self) -> None:
        """Run due compactions of the file tables served, one table at a time."""
        while True:
            await asyncio.sleep(COMPACT_SECONDS)
            for table in self._tables():
                updates = table.updates
                if isinstance(updates, FileTableUpdates):
                    try:
                        await asyncio.to_thread(compact_alone, updates.log)
                    except Exception:
                        log.exception("table %s: compaction failed", table.name)

    async def close(self) -> None:
        """Stop the tasks and every feed."""
        for task in (self._task, self._compacting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for updates in self._followed.values():
            await updates.close()
        self._followed = {}


def compact_alone(log_: FileUpdateLog) -> str:
    """``compact_if_due`` unless another process (or worker) is compacting this log now."""
    if not log_.folder.exists():
        return ""
    with _compactor(log_) as alone:
        return compact_if_due(log_) if alone else ""


def _compactor(log_: FileUpdateLog) -> contextlib.AbstractContextManager[bool]:
    """Whether this process holds the log's compactor lock (never waits for it)."""
    return held_alone(logs_of(log_.table_file) / f"{log_.version}.{COMPACTOR_LOCK}")
