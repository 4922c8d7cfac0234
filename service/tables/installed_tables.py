"""The tables this worker serves, those that failed to load, and the state it publishes.

``install`` is the one way a table starts serving (at start-up, once its store answers, on a
reload): its gatherer starts, it replaces the table of its name in one dict assignment on the
event loop, and the state file tells the other workers which version this one serves.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from service import metrics
from service.tables.served_table import ServedTable
from service.tables.table_updates import catch_up
from service.tables.version_sets import GroupSet, VersionSet
from service.tables.worker_state import WorkerState

log = logging.getLogger(__name__)


class InstalledTables:
    """Tables by name, load failures by name, and this worker's published ``state``."""

    def __init__(self, run_dir: Path | None) -> None:
        # Name -> the table an unpinned request gets (its default version). For a versioned
        # table or group member it is the default of ``version_sets[name]``; both are
        # assigned in one synchronous step on the event loop, never apart.
        self.tables: dict[str, ServedTable] = {}
        # Versioned tables and group members: every served version (one snapshot each).
        self.version_sets: dict[str, VersionSet] = {}
        # Groups: every served group version (one snapshot each); member name -> group.
        self.groups: dict[str, GroupSet] = {}
        self.member_of: dict[str, str] = {}
        # Failures of versioned tables and groups that leave them serving, by table or group:
        # "<name>/<N>", "<name>@<label>", ... -> reason (/readyz names them, still 200).
        self.version_failures: dict[str, dict[str, str]] = {}
        # Tables in the repository that failed to load, with the reason (/readyz, logs).
        self.failures: dict[str, str] = {}
        # What this worker serves (source versions), the reload requests it has answered,
        # published for the other workers of the server (settings.run_dir).
        self.state = WorkerState(run_dir)
        # Held from reading a table's source to installing it: two loads of one table (start-up,
        # a reload, the watcher) never interleave, so an older version never lands last.
        self.installing = asyncio.Lock()
        self._publish_lock = asyncio.Lock()

    async def install(
        self, table: ServedTable, version: str | None, generation: int | None = None
    ) -> ServedTable | None:
        """Serve ``table`` (its source at ``version``) in place of the table of its name and
        publish it; ``generation``: the reload request this answers. Returns the table it
        replaced, for the caller to retire (requests holding it finish on it)."""
        name = table.name
        table.batcher.start()
        await catch_up([(table, self.tables.get(name))])
        replaced = self.tables.get(name)  # no await from here to the swap
        self.tables[name] = table
        self.failures.pop(name, None)
        self.state.tables[name] = version
        if generation is not None:
            self.state.acks[name] = max(generation, self.state.acks.get(name, 0))
            self.state.errors.pop(name, None)
        self.count()
        await self.publish()
        log.info(
            "table %s: %d x %d %s version %s on %s/%s (%s)",
            name,
            table.rows,
            table.dim,
            table.weights.stored_dtype,
            table.weights.version,
            table.backend.name,
            table.backend.device,
            table.placement.reason,
        )
        return replaced

    def install_versions(self, versions: VersionSet) -> None:
        """Serve a versioned table's snapshot in place of the one before (one step)."""
        name = versions.name
        self.tables[name] = versions.default
        self.version_sets[name] = versions
        self.failures.pop(name, None)
        self.state.tables[name] = versions.default.served_version  # published by the caller
        self.count()

    def install_group(self, group: GroupSet) -> None:
        """Serve a group's snapshot for every member at once (one step: no await)."""
        for stem in group.members:
            member = f"{group.name}.{stem}"
            versions = group.member_set(stem)
            self.tables[member] = versions.default
            self.version_sets[member] = versions
            self.member_of[member] = group.name
            self.failures.pop(member, None)
            self.state.tables[member] = group.default
        self.groups[group.name] = group
        self.failures.pop(group.name, None)
        self.count()

    def uninstall(self, name: str) -> None:
        """Stop serving a versioned table or group (it left the repository)."""
        group = self.groups.pop(name, None)
        names = [name] if group is None else [f"{name}.{stem}" for stem in group.members]
        for table in names:
            self.tables.pop(table, None)
            self.state.tables.pop(table, None)
            self.version_sets.pop(table, None)
            self.member_of.pop(table, None)
            self.failures.pop(table, None)
        self.failures.pop(name, None)
        self.version_failures.pop(name, None)
        self.count()

    def all_tables(self) -> list[ServedTable]:
        """Every table served, every version of it included (each once)."""
        seen: dict[int, ServedTable] = {id(t): t for t in self.tables.values()}
        for versions in self.version_sets.values():
            seen.update((id(t), t) for t in versions.tables.values())
        return list(seen.values())

    async def publish(self) -> None:
        """Write this worker's state file: encoded here on the loop (which changes the dicts),
        written on a thread; one write at a time, so an older state never lands last."""
        async with self._publish_lock:
            await asyncio.to_thread(self.state.write, self.state.encode())

    def count(self) -> None:
        """The tables loaded and failed, into the metrics."""
        metrics.TABLES_LOADED.set(len(self.tables))
        metrics.TABLES_FAILED.set(len(self.failures))

    def retire_later(self, table: ServedTable, drain_seconds: float) -> None:
        """Release a replaced table once its requests are answered (bounded by the drain)."""
        asyncio.get_running_loop().create_task(_retire(table, drain_seconds))

    async def close(self) -> None:
        """Stop every table's gatherer and searches and release its backend."""
        for table in self.all_tables():
            await table.batcher.close()
            table.close_search(cancel_queued=True)  # the server's drain is over
            table.backend.close()
        self.tables.clear()
        self.version_sets.clear()
        self.groups.clear()


async def _retire(table: ServedTable, drain_seconds: float) -> None:
    await table.drain(drain_seconds)  # its gatherer and its searches
    await table.batcher.close()
    table.close_search()
    table.backend.close()
