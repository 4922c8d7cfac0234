"""The version a table's source holds now: the one place that knows how to read it.

Cheap: the version watcher asks every poll interval. File tables: a stat-based version of the
table file, its int8 scales, options and vocabulary. Redis tables: one ``GET`` of the
current-version pointer, with the options file's version.
"""

from __future__ import annotations

import asyncio

from service.backends.redis_store import STORE_ERRORS, RedisLayout, read_current
from service.errors import TableLoadError
from service.repository.compact import scales_path
from service.repository.discovery import TableSource
from service.repository.options import read_table_options
from service.repository.weights import file_version
from service.tables.store_clients import StoreClients
from service.updates.base_manifest import served_version

# A Redis table's version cannot be read now: bad options, or the store cannot answer.
_VERSION_ERRORS: tuple[type[BaseException], ...] = (TableLoadError, *STORE_ERRORS)


async def source_version(source: TableSource, clients: StoreClients) -> str | None:
    """The version ``source`` holds now; ``None``: cannot tell now (store unreachable, nothing
    pushed, file gone) -- keep serving what is loaded."""
    try:
        files = await asyncio.to_thread(file_source_version, source)
    except OSError:
        return None
    if source.format != "redis":
        return files
    try:
        options = read_table_options(source.options_path)
        if options.redis is None:
            return None
        client = await clients.client(options.redis, options.redis_timeout_ms)
        async with asyncio.timeout(options.redis_timeout_ms / 1000):
            pointer = await read_current(client, RedisLayout(source.name))
    except _VERSION_ERRORS:
        return None
    return None if pointer is None else redis_source_version(pointer, files)


def redis_source_version(pointer: str, files: str) -> str:
    """A Redis table's source version: its store's version, then its options file's."""
    return f"{pointer}:{files}"


def file_source_version(source: TableSource) -> str:
    """The version of the files of ``source`` that exist (its options and vocabulary too)."""
    scales = scales_path(source.path) if source.path.suffix == ".npy" else None
    others = [scales, source.options_path, source.vocab_path]
    present = [path for path in others if path is not None and path.exists()]
    if not source.path.exists():
        return file_version(*present)
    # A compacted base (row updates folded in) keeps the version it had: not a new version.
    table = served_version(source.path, file_version(source.path))
    return f"{table}:{file_version(*present)}"
