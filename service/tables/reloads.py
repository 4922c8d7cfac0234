"""Reloading tables: in this worker (beside the serving version, then one swap), in every
worker of the server (a request each one answers through its state file), and the backoff
of reloads that failed on the store rather than on the version."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from service.backends.placed import restore_serving
from service.backends.redis_store import STORE_ERRORS
from service.errors import (
    BackendUnavailable,
    ReloadFailed,
    ReloadIncomplete,
    TableLoadError,
    TableRemoved,
)
from service.repository.discovery import discover_tables
from service.settings import ServiceSettings
from service.tables.installed_tables import InstalledTables
from service.tables.served_table import ServedTable
from service.tables.source_versions import source_version
from service.tables.store_clients import StoreClients
from service.tables.table_builder import RedisNotReady, TableBuilder

log = logging.getLogger(__name__)

# A reload that failed on a store error is tried again after this many seconds, doubling
# up to the maximum (the watcher polls more often than a store needs to be asked).
TRANSIENT_RETRY_FIRST_SECONDS = 1.0
TRANSIENT_RETRY_MAX_SECONDS = 30.0


def transient(exc: BaseException) -> bool:
    """True for a failure of the store rather than of the version (a timeout, a dropped
    connection, nothing pushed yet): the same version is worth trying again."""
    return isinstance(exc, (RedisNotReady, BackendUnavailable, *STORE_ERRORS))


class Reloads:
    """Reloads of the tables of ``installed``, built by ``builder``."""

    def __init__(
        self,
        settings: ServiceSettings,
        installed: InstalledTables,
        builder: TableBuilder,
        clients: StoreClients,
    ) -> None:
        self.settings = settings
        self._installed = installed
        self._builder = builder
        self._clients = clients
        # Source versions a load failed at: not retried until the source changes again.
        self.attempted: dict[str, str | None] = {}
        # Tables whose last reload failed on a store error: (monotonic retry time, delay).
        self._backoff: dict[str, tuple[float, float]] = {}

    async def reload(self, name: str) -> ServedTable:
        """Reload ``name`` in every worker of the server; returns once all of them serve it.

        This worker loads the new version first (a ``TableLoadError`` here changes nothing
        anywhere); then it asks every worker to reload and waits, up to
        ``settings.reload_wait_seconds``, until each live worker has confirmed. A worker that
        failed to load raises ``ReloadFailed`` (409), one that did not answer in time
        ``ReloadIncomplete`` (503): never a success unless every worker serves the new version.
        """
        state = self._installed.state
        generation = time.time_ns()
        table = await self.reload_local(name, generation)
        await asyncio.to_thread(state.request_reload, name, generation)
        deadline = time.monotonic() + self.settings.reload_wait_seconds
        while True:
            outcome = await asyncio.to_thread(state.outcome, name, generation)
            if outcome.failed:
                reasons = "; ".join(f"worker {pid}: {why}" for pid, why in outcome.failed.items())
                raise ReloadFailed(
                    f"table {name!r} version {table.weights.version} loaded in worker "
                    f"{state.pid} but failed in others, which keep their previous version: {reasons}"
                )
            if outcome.complete:
                return table
            if time.monotonic() >= deadline:
                raise ReloadIncomplete(
                    f"table {name!r} version {table.weights.version} serves in worker "
                    f"{state.pid}, but worker(s) {outcome.pending} did not confirm within "
                    f"{self.settings.reload_wait_seconds} s; they serve their previous version "
                    "until they do (the request stands: they reload when they get to it)",
                    {"table": name, "pending_workers": outcome.pending},
                )
            await asyncio.sleep(0.05)

    async def reload_local(self, name: str, generation: int | None = None) -> ServedTable:
        """Load ``name`` again in this worker beside the serving version, then swap.

        Requests that already hold the old version finish on it (its gatherer is drained,
        then closed); later ones get the new one. If the new version fails to load, the old
        one keeps serving. ``generation``: the reload request this answers (acknowledged to
        the other workers, or its failure).
        """
        installed = self._installed
        async with installed.installing:
            try:
                new, version = await self._load_new_version(name)
            except Exception as exc:
                await self._restore_serving(name)
                # A store error is no answer to the request: it stays pending (the asking
                # worker says reload_incomplete) and the watcher tries it again.
                if generation is not None and not transient(exc):
                    installed.state.errors[name] = (generation, str(exc))
                    await installed.publish()
                raise
            self.attempted.pop(name, None)
            self._backoff.pop(name, None)
            old = await installed.install(new, version, generation)
            log.info(
                "table %s reloaded: version %s -> %s",
                name,
                old.weights.version if old else None,
                new.weights.version,
            )
        if old is not None:
            installed.retire_later(old, float(self.settings.drain_seconds))
        return new

    async def _restore_serving(self, name: str) -> None:
        """The version serving on after a failed reload: back on the GPU the reload moved it
        off to make room for the new one, or its placement says it is on the CPU and why
        (``placed.restore_serving``; ``TableInfo.placement_reason`` reads it)."""
        serving = self._installed.tables.get(name)
        if serving is None:
            return
        serving.placement = await asyncio.to_thread(
            restore_serving, serving.backend, serving.placement, f"table {name}"
        )

    async def _load_new_version(self, name: str) -> tuple[ServedTable, str | None]:
        sources, problems = await asyncio.to_thread(discover_tables, Path(self.settings.models))
        if name not in sources:
            if name in problems:
                raise TableLoadError(problems[name])
            raise TableRemoved(f"table {name!r} is no longer in the repository")
        version = await source_version(sources[name], self._clients)
        try:
            return await self._builder.build(sources[name], version)
        except Exception as exc:
            self.note_failure(name, version, exc)
            if name not in self._installed.tables:
                self._installed.failures[name] = str(exc)
            raise

    def note_failure(self, name: str, version: str | None, exc: BaseException) -> None:
        """A store error is retried after a backoff; any other failure waits for the source to
        change (a version that does not load will not load next poll either)."""
        if transient(exc):
            delay = self._backoff.get(name, (0.0, TRANSIENT_RETRY_FIRST_SECONDS / 2))[1] * 2
            delay = min(delay, TRANSIENT_RETRY_MAX_SECONDS)
            self._backoff[name] = (time.monotonic() + delay, delay)
        else:
            # The store answered: no backoff left over from an earlier store error may hold
            # back the next version.
            self._backoff.pop(name, None)
            self.attempted[name] = version

    def retry_due(self, name: str) -> bool:
        """False while ``name`` waits out the backoff of a reload that failed on a store error."""
        entry = self._backoff.get(name)
        return entry is None or time.monotonic() >= entry[0]

    async def reload_all(self) -> None:
        """Reload every flat table of the repository in every worker (SIGHUP); failures keep
        the old versions. Versioned tables and groups follow the repository by themselves."""
        sources, _ = await asyncio.to_thread(discover_tables, Path(self.settings.models))
        installed = self._installed
        flat = [name for name in installed.tables if name not in installed.version_sets]
        for name in sorted(set(sources) | set(flat)):
            try:
                await self.reload(name)
            except Exception as exc:
                log.error(
                    "reload of table %s failed, the previous version keeps serving: %s", name, exc
                )
