"""Every worker's version watcher: follows reload requests and changed table sources.

Each poll interval it (1) reloads every table another worker asked to reload (admin route,
SIGHUP) and acknowledges the request, and (2) with ``reload_watch_files``, compares each
table's served version with its source's current version (``registry.source_version``, the one
place that knows how to read it: a stat of the files, or a version pointer in a remote store)
and reloads the tables that changed. Reloads load the new version beside the old one and swap
it in one step (``TableRegistry.reload_local``), so no response mixes versions.

A file table is reloaded once its changed version has read the same two polls running: its
files (int8 codes and scales, ``.toml``, ``.vocab``) are renamed one at a time, and a poll
between two renames would load new codes with old scales. A Redis table's version flips in
one ``SET``: reloaded at once.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from service.repository.discovery import TableSource, discover_tables
from service.settings import ServiceSettings
from service.tables.served_table import ServedTable
from service.tables.worker_state import WorkerState

log = logging.getLogger(__name__)


class WatchedTables(Protocol):
    """What the watcher asks of the tables it follows (``TableRegistry``), declared here so
    that the watcher does not import the registry that starts it."""

    settings: ServiceSettings

    @property
    def state(self) -> WorkerState: ...

    @property
    def attempted(self) -> dict[str, str | None]: ...

    def retry_due(self, name: str) -> bool: ...

    def served_version(self, name: str) -> str | None: ...

    async def source_version(self, source: TableSource) -> str | None: ...

    async def reload_local(self, name: str, generation: int | None = None) -> ServedTable: ...

    def publish_row_cache_metrics(self) -> None: ...

    async def follow_versions(self, first: bool = False) -> None: ...


class VersionWatcher:
    """Polls at ``interval`` seconds until cancelled."""

    def __init__(self, registry: WatchedTables, interval: float, watch_files: bool) -> None:
        self.registry = registry
        self.interval = interval
        self.watch_files = watch_files
        # File tables whose source changed: the version last seen, reloaded once it holds.
        self._settling: dict[str, str] = {}

    async def run(self) -> None:
        """Poll until cancelled; a failed poll is logged and the next one runs."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("version watcher poll failed")

    async def poll(self) -> None:
        """One round: requests first (someone waits on them), then changed sources."""
        await self.follow_requests()
        if self.watch_files:
            await self.follow_sources()
            # Versioned tables and groups: new, removed and changed version folders, policy
            # and labels (TableRegistry.follow_versions).
            await self.registry.follow_versions()
        self.registry.publish_row_cache_metrics()

    async def follow_requests(self) -> None:
        state = self.registry.state
        requests = await asyncio.to_thread(state.requests)
        for name, generation in sorted(requests.items()):
            answered = max(state.acks.get(name, 0), state.errors.get(name, (0, ""))[0])
            if generation <= answered or not self.registry.retry_due(name):
                continue
            try:
                await self.registry.reload_local(name, generation)
            except Exception as exc:
                log.error(
                    "requested reload of table %s failed, the previous version keeps serving: %s",
                    name,
                    exc,
                )

    async def follow_sources(self) -> None:
        registry = self.registry
        sources, _ = await asyncio.to_thread(discover_tables, Path(registry.settings.models))
        for name, source in sorted(sources.items()):
            try:
                current = await registry.source_version(source)
            except OSError:
                continue  # replaced between listing and stat: seen next poll
            if current is None or current in (
                registry.served_version(name),
                registry.attempted.get(name),
            ):
                self._settling.pop(name, None)
                continue
            if source.format != "redis" and self._settling.get(name) != current:
                self._settling[name] = current  # may be half renamed: wait one poll
                continue
            if not registry.retry_due(name):
                continue  # its last reload failed on a store error: tried again after a backoff
            log.info("table %s changed at its source (version %s): reloading", name, current)
            try:
                await registry.reload_local(name)
            except Exception as exc:
                log.error(
                    "reload of changed table %s failed, the previous version keeps serving: %s",
                    name,
                    exc,
                )
