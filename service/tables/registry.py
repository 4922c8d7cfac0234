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
from typing import Any

from service import lifecycle, metrics
from service.backends.gpu_memory import gpu_free_bytes
from service.backends.ort_runtime import available_providers
from service.errors import GroupNotFound, TableLoadError, TableNotFound, TableUnavailable
from service.repository.discovery import TableSource
from service.repository.layout import discover_repository
from service.settings import ServiceSettings
from service.tables.installed_tables import InstalledTables
from service.tables.log_retention import LogRetention
from service.tables.redis_versions import RedisVersions
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
from service.tables.version_sets import GroupSet, VersionSet
from service.tables.version_watcher import VersionWatcher
from service.tables.versioned_serving import VersionedServing
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
        self._versioned = VersionedServing(
            self.installed, self._builder, float(settings.drain_seconds)
        )
        drain = float(settings.drain_seconds)
        self._redis_versions = RedisVersions(
            self._builder.redis_version,
            lambda table: self.installed.retire_later(table, drain),
        )
        self._redis_retries: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._updates: UpdateFollower | None = None  # row updates (issue 25)
        self._retention = LogRetention(
            Path(settings.models), settings.update_log_grace_seconds, self.every_version
        )

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
    def get(self, name: str, version: str | None = None) -> ServedTable:
        """The table called ``name`` at ``version`` (a version string or a label; None: the
        default version); ``TableUnavailable`` when it is in the repository but failed to load
        (failed is not missing), else ``TableNotFound``; ``VersionNotFound`` (404, naming what
        is served) for a version or label it does not serve. The table returned is one
        immutable version: a request holds it to its end, whatever flips meanwhile."""
        if version is not None:
            versions = self.installed.version_sets.get(name)
            if versions is not None:
                return versions.pick(version)
            current = self.get(name)
            if current.weights.format == "redis":
                return self._redis_versions.pick(current, version)
            return VersionSet.single(current).pick(version)
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

    def versions(self, name: str) -> VersionSet:
        """Every served version of ``name`` (one for a flat table); errors as ``get``."""
        versions = self.installed.version_sets.get(name)
        return versions if versions is not None else VersionSet.single(self.get(name))

    def versioned(self, name: str) -> bool:
        """True for a versioned table or a group member (versions named by number)."""
        return name in self.installed.version_sets

    def info(self, table: ServedTable) -> dict[str, Any]:
        """``TableInfo`` of ``table`` (one version): ``versions`` and ``labels`` of its name,
        ``version`` the default version."""
        versions = self.installed.version_sets.get(table.name)
        if versions is None:
            current = self.installed.tables.get(table.name, table)
            if current.weights.format == "redis":
                return {**table.info(), "versions": self._redis_versions.versions(current)}
            return table.info()
        return {
            **table.info(),
            "version": versions.default.served_version,
            **versions.detail(),
        }

    def group(self, name: str) -> GroupSet:
        """The group called ``name``; ``GroupNotFound`` (404) when there is none."""
        group = self.installed.groups.get(name)
        if group is None:
            reason = self.failures.get(name)
            if reason is not None:
                raise TableUnavailable(
                    f"group {name!r} is in the model repository but serves no version",
                    {"group": name, "reason": reason},
                )
            raise GroupNotFound(f"no group named {name!r}", {"group": name})
        return group

    def groups(self) -> list[GroupSet]:
        """The groups served, by name."""
        return [self.installed.groups[name] for name in sorted(self.installed.groups)]

    def has(self, name: str) -> bool:
        """True when ``name`` is served."""
        return name in self.installed.tables

    def names(self) -> list[str]:
        """The names of the tables served, sorted."""
        return sorted(self.installed.tables)

    def tables(self) -> list[ServedTable]:
        """The tables served, by name."""
        return [self.installed.tables[name] for name in self.names()]

    def every_version(self) -> list[ServedTable]:
        """Every table version this worker serves: the flat tables, every version of the
        versioned tables and groups, the pinned Redis versions (each has its own caches and
        row updates)."""
        served = {id(table): table for table in self.installed.tables.values()}
        for versions in self.installed.version_sets.values():
            served.update((id(table), table) for table in versions.tables.values())
        served.update((id(table), table) for table in self._redis_versions.tables())
        return list(served.values())

    async def _reload_compacted(self, name: str) -> None:
        """A table whose base file was compacted by another process, loaded again here (same
        rows, version and sequence). Versioned tables and group members need nothing: the
        compacted file changes their version folder's identity, which ``follow_versions``
        loads again by itself."""
        if not self._versioned.follows(name):
            await self.reload_local(name)

    def status(self) -> tuple[str, dict[str, str]]:
        """``ready`` | ``loading`` | ``degraded`` | ``draining`` (SIGTERM received), and failed
        tables (dead batchers included)."""
        failed = dict(self.failures)
        for table in self.installed.tables.values():
            if not table.batcher.healthy:
                failed[table.name] = "batch worker stopped"
        degraded = bool(failed)
        # Held-back versions and unbound labels leave their table serving: named, still ready.
        for failures in self.installed.version_failures.values():
            failed.update(failures)
        if lifecycle.draining():
            return "draining", failed
        if self.loading:
            return "loading", failed
        return ("degraded" if degraded else "ready"), failed

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
        for table in self.installed.all_tables():
            table.publish_cache_metrics()

    # ------------------------------------------------------------------ reloads
    async def reload(self, name: str, version: str | None = None) -> ServedTable:
        """Reload ``name`` in every worker of the server (``Reloads.reload``).

        A versioned table or group member: this worker reads the repository again now and
        loads version ``version`` (every version when None) again, with its held-back failure
        forgotten; the other workers follow within the watch interval. Returns the table at
        ``version`` (the default when None)."""
        if not self._versioned.follows(name):
            if version is not None:
                self.get(name, version)  # a flat table's one version, or 404
            return await self._reloads.reload(name)
        owner = self.installed.member_of.get(name, name)
        number = self.get(name, version).served_version if version is not None else None
        self._versioned.forget(owner, None if number is None else int(number))
        await self.follow_versions()
        return self.get(name, version)

    async def follow_versions(self, first: bool = False) -> None:
        """Read the repository and follow its versioned tables and groups (each poll)."""
        repository = await asyncio.to_thread(discover_repository, Path(self.settings.models))
        async with self.installed.installing:
            await self._versioned.sync(repository, first)
        await self._redis_versions.refresh(list(self.installed.tables.values()))

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
        repository = await asyncio.to_thread(discover_repository, folder)
        for name, reason in repository.problems.items():
            log.error("table %s not loaded: %s", name, reason)
            self.failures[name] = reason
        for name, source in repository.flat.items():
            await self._load_first(name, source)
        async with self.installed.installing:
            await self._versioned.sync(repository, first=True)
        self.installed.count()
        metrics.WORKERS.set(1)
        self.loading = False
        watcher = VersionWatcher(
            self, self.settings.reload_poll_seconds, self.settings.reload_watch_files
        )
        self._watcher = asyncio.get_running_loop().create_task(
            watcher.run(), name="version-watcher"
        )
        self._updates = UpdateFollower(
            self.every_version, self._reload_compacted
        ).start()  # issue 25
        self._retention.start()  # old versions' update logs

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
        await self._retention.close()
        with contextlib.suppress(OSError):
            self.state.withdraw()
        metrics.WORKERS.set(0)
        for task in list(self._redis_retries.values()):
            task.cancel()
        for table in self._redis_versions.tables():
            await table.batcher.close()
            table.backend.close()
        await self.installed.close()
        await self._clients.close()
