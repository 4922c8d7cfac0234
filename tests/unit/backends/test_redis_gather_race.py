"""The hot-row cache of a Redis table under a row update racing two fetches of one id.

A fake store answers each read with the rows it holds when the read is sent, and holds the
answer until the test lets it go: the interleavings are set by the test, never by timing.
The update's invalidation is ``RedisTableUpdates.apply`` (what the feed's event does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from service.backends.redis_gather import RedisGatherBackend
from service.backends.redis_store import RedisLayout, RedisTableMeta
from service.tables.table_updates import RedisTableUpdates
from service.updates.redis_feed import UpdateEvent

ROWS, DIM = 100, 4
META = RedisTableMeta(ROWS, DIM, "float32", "v1", 8, "redis://fake:6379")


class HeldStore:
    """Rows by id; each read takes them when sent. While ``hold`` is set a read answers
    only when the test sets its event (from ``sent``); otherwise at once."""

    def __init__(self) -> None:
        self.rows = np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM)
        self.sent: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        self.hold = True
        self.reads: list[list[int]] = []

    async def read(self, ids: np.ndarray, timeout_s: float) -> np.ndarray:
        answer = self.rows[ids].copy()  # what Redis holds when the read reaches it
        self.reads.append(ids.tolist())
        if self.hold:
            release = asyncio.Event()
            await self.sent.put(release)
            await release.wait()
        return answer

    def update(self, ids: list[int], value: float) -> None:
        self.rows[ids] = value


def _backend(store: HeldStore) -> tuple[RedisGatherBackend, RedisTableUpdates]:
    client = aioredis.Redis.from_url(META.url, socket_timeout=1.0)  # never connects here
    backend = RedisGatherBackend(client, RedisLayout("race"), META, 16, 1000)
    backend._reader = store  # type: ignore[assignment]
    updates = RedisTableUpdates("race", META, client, META.url, backend)
    return backend, updates


async def _started(
    store: HeldStore, fetch: Coroutine[Any, Any, np.ndarray]
) -> tuple[asyncio.Task[np.ndarray], asyncio.Event]:
    """Start ``fetch``; returns once its read reached the store (its answer held)."""
    task = asyncio.get_running_loop().create_task(fetch)
    return task, await store.sent.get()


def _update(store: HeldStore, updates: RedisTableUpdates, ids: list[int], value: float) -> None:
    """An update written to the store, then its event seen by this process."""
    store.update(ids, value)
    updates.apply(UpdateEvent("v1", updates.sequence + 1, np.array(ids, np.int64)))


def test_a_fetch_that_read_before_the_update_never_caches_the_replaced_row() -> None:
    async def main() -> None:
        store = HeldStore()
        backend, updates = _backend(store)
        old = store.rows[5].copy()
        a, release_a = await _started(store, backend.gather_async(np.array([5, 6])))
        _update(store, updates, [5], -1.0)  # A read row 5 before the update
        b, release_b = await _started(store, backend.gather_async(np.array([5])))
        release_b.set()
        assert (await b)[0].tolist() == [-1.0] * DIM  # B read after: the new row, cached
        release_a.set()
        assert np.array_equal((await a)[0], old)  # A answers what it read ...
        store.hold = False
        again = await backend.gather_async(np.array([5, 6]))  # ... but cached nothing old
        assert again[0].tolist() == [-1.0] * DIM
        assert len(store.reads) == 2  # both rows were hits: row 6 of A was kept

    asyncio.run(main())


def test_a_fetch_ending_after_the_invalidation_leaves_the_row_uncached() -> None:
    async def main() -> None:
        store = HeldStore()
        backend, updates = _backend(store)
        a, release_a = await _started(store, backend.gather_async(np.array([5])))
        _update(store, updates, [5], -2.0)
        release_a.set()
        await a
        store.hold = False
        assert (await backend.gather_async(np.array([5])))[0].tolist() == [-2.0] * DIM
        assert store.reads == [[5], [5]]  # a miss: read again

    asyncio.run(main())


def test_an_update_of_other_rows_keeps_what_a_fetch_read() -> None:
    async def main() -> None:
        store = HeldStore()
        backend, updates = _backend(store)
        a, release_a = await _started(store, backend.gather_async(np.array([1, 2])))
        _update(store, updates, [3], -3.0)  # not a row A read
        release_a.set()
        await a
        store.hold = False
        await backend.gather_async(np.array([1, 2]))
        assert store.reads == [[1, 2]]  # both hits

    asyncio.run(main())
