"""TableRegistry: loads every table of the model repository and hands them out by name.

A table that fails to load is kept aside with its reason (``/readyz``, logs); the others
still serve. The registry is the tables' public face; the work is done beside it:
``table_builder`` builds a table from its source, ``installed_tables`` holds what serves,
``reloads`` replaces it, ``store_clients`` keeps the Redis connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from service import lifecycle, metrics
from service.backends.gpu_memory import gpu_free_bytes
from service.backends.ort_runtime import available_providers
from service.errors import TableLoadError, TableNotFound, TableUnavailable
from service.repository.discovery import TableSource, discover_tables
from service.settings import ServiceSettings
from service.tables.installed_tables import InstalledTables
from service.tables.reloads import Reloads
from service.tables.served_table import ServedTable
from service.tables.source_versions import source_version
from service.tables.store_clients import StoreClients
from service.tables.table_builder import (
    BackendFactory,
    RedisNotReady,
    TableBuilder,
    default_backend_factory,
)
from service.tables.update_follower import UpdateFollower
from service.tables.version_watcher import VersionWatcher
from service.tables.worker_state import WorkerState

log = logging.getLogger(__name__)

# Seconds between attempts to load a Redis table whose store could not be read at start-up.
REDIS_RETRY_SECONDS = 2.0


class TableRegistry:
    """Tables by name; ``load`` fills it, ``get`` serves it, ``reload`` replaces one."""

    def __init__(
        self,
        settings: ServiceSettings,
        backend_factory: BackendFactory = default_backend_factory,
        providers: Callable[[], list[str]] = available_providers,
        free_gpu_bytes: Callable[[int], int | None] = gpu_free_bytes,
    ) -> None:
        self.settings = settings
        self.loading = True
        self.installed = InstalledTables(settings.run_dir)
        self._clients = StoreClients()
        self._builder = TableBuilder(
            settings,
            self._clients,
            backend_factory,
            providers,
            free_gpu_bytes,
            serving=self.installed.tables.get,
        )
        self._reloads = Reloads(settings, self.installed, self._builder, self._clients)
        self._redis_retries: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._updates: UpdateFollower | None = None  # row updates (issue 25)

    @property
    def failures(self) -> dict[str, str]:
        """Tables in the repository that failed to load, with the reason."""
        return self.installed.failures

    @property
    def state(self) -> WorkerState:
        """What this worker serves and the reload requests it answered, as published."""
        return self.installed.state

    @property
    def attempted(self) -> dict[str, str | None]:
        """Source versions a load failed at: not retried until the source changes again."""
        return self._reloads.attempted

    # ------------------------------------------------------------------ queries
    def get(self, name: str) -> ServedTable:
        """The table called ``name``; ``TableUnavailable`` when it is in the repository but
        failed to load (failed is not missing), else ``TableNotFound``."""
        table = self.installed.tables.get(name)
        if table is None:
            self.check_not_failed(name)
            if self.loading:  # this worker may not have reached it yet: not a 404
                raise TableUnavailable(
                    f"table {name!r} is not loaded yet in this worker; retry shortly",
                    {"table": name},
                    retry=True,
                )
            raise TableNotFound(f"no table named {name!r}", {"table": name})
        return table

    def check_not_failed(self, name: str) -> None:
        """Raise ``TableUnavailable`` (503, with the load reason) if ``name`` failed to load."""
        reason = self.failures.get(name)
        if reason is not None:
            raise TableUnavailable(
                f"table {name!r} is in the model repository but failed to load",
                {"table": name, "reason": reason},
            )

    def has(self, name: str) -> bool:
        """True when ``name`` is served."""
        return name in self.installed.tables

    def names(self) -> list[str]:
        """The names of the tables served, sorted."""
        return sorted(self.installed.tables)

    def tables(self) -> list[ServedTable]:
        """The tables served, by name."""
        return [self.installed.tables[name] for name in self.names()]

    def status(self) -> tuple[str, dict[str, str]]:
        """``ready`` | ``loading`` | ``degraded`` | ``draining`` (SIGTERM received), and failed
        tables (dead batchers included)."""
        failed = dict(self.failures)
        for table in self.installed.tables.values():
            if not table.batcher.healthy:
                failed[table.name] = "batch worker stopped"
        if lifecycle.draining():
            return "draining", failed
        if self.loading:
            return "loading", failed
        return ("degraded" if failed else "ready"), failed

    def gathers_inline(self, name: str) -> bool:
        """True when ``name`` is loaded and gathers in the caller's stack (numpy, batching
        off): a request to it can be answered without waiting on the event loop."""
        table = self.installed.tables.get(name)
        return table is not None and table.batcher.inline

    def batched(self, name: str) -> bool:
        """True when the table queues requests (so a client that leaves can be skipped)."""
        table = self.installed.tables.get(name)
        return table is not None and table.batcher.config.enabled

    def served_version(self, name: str) -> str | None:
        """The source version this worker serves ``name`` at (None: not served)."""
        return self.state.tables.get(name) if name in self.installed.tables else None

    async def source_version(self, source: TableSource) -> str | None:
        """The version ``source`` holds now (``source_versions``); None: cannot tell now."""
        return await source_version(source, self._clients)

    def publish_row_cache_metrics(self) -> None:
        """Move this worker's cache counts into the metrics (each worker, every poll, and
        before a scrape): the row-text cache's events and the Redis hot-row gauges."""
        for table in self.tables():
            table.publish_cache_metrics()

    # ------------------------------------------------------------------ reloads
    async def reload(self, name: str) -> ServedTable:
        """Reload ``name`` in every worker of the server (``Reloads.reload``)."""
        return await self._reloads.reload(name)

    async def reload_local(self, name: str, generation: int | None = None) -> ServedTable:
        """Reload ``name`` in this worker only (``Reloads.reload_local``)."""
        return await self._reloads.reload_local(name, generation)

    async def reload_all(self) -> None:
        """Reload every table in every worker (SIGHUP); failures keep the old versions."""
        await self._reloads.reload_all()

    def retry_due(self, name: str) -> bool:
        """False while ``name`` waits out the backoff of a reload that failed on the store."""
        return self._reloads.retry_due(name)

    # ------------------------------------------------------------------ loading
    async def load(self) -> None:
        """Load every table of the repository (file work off the event loop), then follow
        reload requests and changed sources (the version watcher)."""
        # Requests asked before this worker started are answered by this very load (it reads
        # every source after them). Published at once, and again as each table loads: this
        # worker serves a table as soon as it has it, so a reload asked meanwhile must wait
        # for it (it is pending until its watcher reloads), not answer 200 without it.
        self.state.acks = dict(await asyncio.to_thread(self.state.requests))
        await self.installed.publish()
        folder = Path(self.settings.models)
        sources, problems = await asyncio.to_thread(discover_tables, folder)
        for name, reason in problems.items():
            log.error("table %s not loaded: %s", name, reason)
            self.failures[name] = reason
        for name, source in sources.items():
            await self._load_first(name, source)
        self.installed.count()
        metrics.WORKERS.set(1)
        self.loading = False
        watcher = VersionWatcher(
            self, self.settings.reload_poll_seconds, self.settings.reload_watch_files
        )
        self._watcher = asyncio.get_running_loop().create_task(
            watcher.run(), name="version-watcher"
        )
        self._updates = UpdateFollower(self.tables, self.reload_local).start()  # issue 25

    async def _load_first(self, name: str, source: TableSource) -> None:
        """Load and serve one table at start-up; a failure leaves its reason in ``failures``.

        Under the install lock: an admin reload asked during start-up either ran first (the
        table is then served already, at that newer version, and is left as it is) or runs
        after; it never installs its version only to have the start-up load replace it."""
        async with self.installed.installing:
            if name in self.installed.tables:
                return
            version = await self.source_version(source)
            try:
                table, version = await self._builder.build(source, version)
            except RedisNotReady as exc:
                log.error("table %s not loaded yet (retrying): %s", name, exc)
                self.failures[name] = str(exc)
                self._retry_redis_later(source)
                return
            except Exception as exc:  # a loader bug must not take the other tables down
                if isinstance(exc, TableLoadError):
                    log.error("table %s not loaded: %s", name, exc)
                    self.failures[name] = str(exc)
                else:
                    log.exception("table %s not loaded", name)
                    self.failures[name] = f"{source.path}: unexpected error: {exc!r}"
                self._reloads.note_failure(name, version, exc)
                return
            await self.installed.install(table, version)

    def _retry_redis_later(self, source: TableSource) -> None:
        if source.name not in self._redis_retries:
            task = asyncio.get_running_loop().create_task(self._retry_redis(source))
            self._redis_retries[source.name] = task

    async def _retry_redis(self, source: TableSource) -> None:
        """Load a Redis table once its store answers; until then it stays failed in /readyz."""
        try:
            while True:
                await asyncio.sleep(REDIS_RETRY_SECONDS)
                try:
                    table, version = await self._builder.build(source, None)
                except RedisNotReady as exc:
                    self.failures[source.name] = str(exc)
                    continue
                except Exception as exc:
                    log.error("table %s not loaded: %s", source.name, exc)
                    self.failures[source.name] = str(exc)
                    return
                async with self.installed.installing:
                    if source.name not in self.installed.tables:
                        await self.installed.install(table, version)
                return
        finally:
            self._redis_retries.pop(source.name, None)

    async def close(self) -> None:
        """Stop the version watcher, every gatherer, and release every backend."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._updates is not None:
            await self._updates.close()  # issue 25
        with contextlib.suppress(OSError):
            self.state.withdraw()
        metrics.WORKERS.set(0)
        for task in list(self._redis_retries.values()):
            task.cancel()
        await self.installed.close()
        await self._clients.close()
