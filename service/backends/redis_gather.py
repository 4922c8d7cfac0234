"""Gather from a Redis table: hot rows from the process's cache, the rest in one round trip.

The backend is pinned to one version (keys and cache both belong to it); a new
version is a new backend, built by a reload, so one response never mixes versions.
"""

from __future__ import annotations

import numpy as np

from service.backends.redis_store import (
    RedisClient,
    RedisLayout,
    RedisTableMeta,
    RowReader,
    complete_versions,
)
from service.caches.hot_rows import HotRowCache


class RedisGatherBackend:
    """``gather_async`` on the event loop (asyncio client); no executor hop."""

    name = "redis"
    device = "cpu"
    inline_safe = False

    def __init__(
        self,
        client: RedisClient,
        layout: RedisLayout,
        meta: RedisTableMeta,
        cache_rows: int,
        timeout_ms: int,
    ) -> None:
        self.meta = meta
        self._client = client
        self._layout = layout
        self._cache_rows = cache_rows
        self._timeout_ms = timeout_ms
        self._reader = RowReader(client, layout, meta)
        self._timeout_s = timeout_ms / 1000
        self.cache = HotRowCache(min(cache_rows, meta.rows), meta.dim, np.dtype(meta.dtype))

    def at_version(self, meta: RedisTableMeta) -> RedisGatherBackend:
        """A backend of the same table, client and settings pinned to another version (its
        own hot-row cache: no row of one version ever answers for another)."""
        return RedisGatherBackend(
            self._client, self._layout, meta, self._cache_rows, self._timeout_ms
        )

    async def versions(self) -> dict[str, RedisTableMeta]:
        """Every complete version of the table still in Redis (one ``HGETALL``)."""
        return await complete_versions(self._client, self._layout, self.meta.url)

    def gather(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError("Redis tables are gathered with gather_async")

    async def gather_async(self, ids: np.ndarray) -> np.ndarray:
        """``table[ids]``: cache hits copied, misses (deduplicated) read from Redis once."""
        cache = self.cache
        if cache.capacity == 0:
            unique, inverse = np.unique(ids, return_inverse=True)
            rows = await self._reader.read(unique, self._timeout_s)
            return rows if unique.size == ids.size and (unique == ids).all() else rows[inverse]
        id_list = ids.tolist()
        # Before the read: rows of ids an update discards meanwhile are not stored after it.
        generation = cache.generation
        slots = cache.lookup(id_list)
        out = np.empty((ids.size, self.meta.dim), dtype=cache.rows.dtype)
        hit = slots >= 0
        if hit.all():
            np.take(cache.rows, slots, axis=0, out=out)
            return out
        out[hit] = cache.rows[slots[hit]]
        miss_positions = np.flatnonzero(~hit)
        missing, inverse = np.unique(ids[miss_positions], return_inverse=True)
        fetched = await self._reader.read(missing, self._timeout_s)
        out[miss_positions] = fetched[inverse]
        cache.store_if_fresh(generation, missing.tolist(), fetched)
        return out

    def close(self) -> None:
        """The client is shared by the registry's tables of one URL; the registry closes it."""
        self.cache = HotRowCache(0, self.meta.dim, np.dtype(self.meta.dtype))
