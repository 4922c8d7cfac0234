"""One loaded table, ready to answer lookups."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from service import metrics
from service.backends.base import GatherBackend
from service.backends.placement import Placement
from service.backends.redis_store import RedisTableMeta
from service.batching.gatherer import TableGatherer
from service.caches.hot_rows import HotRowCache
from service.caches.row_text_cache import RowTextCache
from service.errors import InvalidRequest, Overloaded
from service.repository.options import TableOptions
from service.repository.vocabulary import Vocabulary
from service.repository.weights import TableWeights
from service.semantics.neighbors import ExactNeighborIndex, UpdatedRows

if TYPE_CHECKING:
    from service.tables.table_updates import TableUpdates


@dataclass
class ServedTable:
    """Everything a request needs about one table; immutable once built (a reload swaps it)."""

    name: str
    # A Redis table has no local rows: its meta (rows, dim, dtype, version) stands here.
    weights: TableWeights | RedisTableMeta
    options: TableOptions
    placement: Placement
    backend: GatherBackend
    # A MicroBatcher, or a DirectGatherer for a table with batching off.
    batcher: TableGatherer
    row_cache: RowTextCache
    pad_id: int | None
    vocabulary: Vocabulary | None = None
    # The version that answers for this table (X-Table-Version, TableInfo): "N" for a version
    # of a versioned table or group, else (flat, Redis) the weights' version as always.
    served_version: str = ""
    updates: TableUpdates | None = None  # row updates (table_updates); None: refused (409)
    _index: ExactNeighborIndex | None = field(default=None, repr=False)
    _search_pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    # Searches started and not yet answered (running or queued on the search thread): a
    # retired version waits for them, as for its batcher, before its search thread stops.
    _searches: int = field(default=0, repr=False)
    # Requests that resolved this version and are not answered yet (the ASGI path: it awaits
    # between resolving and answering): a retired version waits for them before it closes.
    _holds: int = field(default=0, repr=False)
    _search_closed: bool = field(default=False, repr=False)
    # Read by every request: plain attributes, not properties reaching into the weights.
    rows: int = field(init=False, repr=False)
    dim: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rows = self.weights.rows
        self.dim = self.weights.dim
        if not self.served_version:
            self.served_version = self.weights.version

    def local_weights(self, route: str) -> TableWeights:
        """The table's local rows, for routes that scan them; 422 for a Redis table."""
        if isinstance(self.weights, RedisTableMeta):
            raise InvalidRequest(
                f"{route} scans every row and is not offered for Redis tables such as {self.name!r}",
                {"table": self.name, "format": "redis"},
            )
        return self.weights

    async def search(
        self,
        queries: np.ndarray,
        k: int,
        metric: str,
        exclude: np.ndarray | None,
        updated: UpdatedRows | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact nearest rows, on this table's own search thread (searches queue there, one
        at a time, and never stall the event loop or the table's gathers)."""
        if self._search_closed:
            # This version was retired (reload or unload): a retry reaches the new one.
            raise Overloaded("the table is being unloaded; retry")
        if self._index is None:
            self._index = ExactNeighborIndex(self.local_weights("neighbors"))
            self._search_pool = ThreadPoolExecutor(1, thread_name_prefix=f"search-{self.name}")
        loop = asyncio.get_running_loop()
        self._searches += 1
        try:
            return await loop.run_in_executor(
                self._search_pool, self._index.search, queries, k, metric, exclude, updated
            )
        finally:
            self._searches -= 1

    @property
    def searches(self) -> int:
        """Searches started on this version and not yet answered."""
        return self._searches

    def hold(self) -> None:
        """A request resolved this version: it is not closed under it (``release`` after)."""
        self._holds += 1

    def release(self) -> None:
        """The request that held this version is answered."""
        self._holds -= 1

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) until the requests holding this version, the batcher and the
        searches have nothing left; True if so."""
        deadline = time.monotonic() + timeout
        while self._holds and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        drained = await self.batcher.drain(max(0.0, deadline - time.monotonic()))
        while self._searches and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return drained and not self._searches and not self._holds

    def close_search(self, cancel_queued: bool = False) -> None:
        """Stop taking searches. Those already queued still run and are answered (after a
        drain there are none, unless it timed out), unless ``cancel_queued``: at process
        exit, where nobody is left to answer and the interpreter would wait for each of
        them before exiting (the search running now still finishes: numpy cannot be
        interrupted)."""
        self._search_closed = True
        if self._search_pool is not None:
            self._search_pool.shutdown(wait=False, cancel_futures=cancel_queued)

    def publish_cache_metrics(self) -> None:
        """Move this table's cache counts into the metrics: the row-text cache's events and,
        for a Redis table, its hot-row cache's gauges."""
        self.row_cache.publish_metrics()
        hot = getattr(self.backend, "cache", None)
        if isinstance(hot, HotRowCache):
            for stat, value in (
                ("hits", hot.hits),
                ("misses", hot.misses),
                ("entries", len(hot)),
                ("capacity", hot.capacity),
            ):
                metrics.HOT_ROWS.labels(self.name, stat).set(value)

    def info(self) -> dict[str, Any]:
        """API.md's ``TableInfo`` plus the placement reason and the batching knobs."""
        cfg = self.batcher.config
        return {
            "name": self.name,
            "rows": self.rows,
            "dim": self.dim,
            "dtype": self.weights.stored_dtype,
            "format": self.weights.format,
            "backend": self.backend.name,
            "device": self.backend.device,
            "padding_idx": self.pad_id if self.options.padding_idx is not None else None,
            "mask_zero": self.options.mask_zero,
            "max_norm": self.options.max_norm,
            "norm_type": self.options.norm_type,
            "version": self.served_version,
            "versions": [self.served_version],
            "labels": {},
            "update_sequence": self.updates.sequence if self.updates is not None else 0,
            "placement_reason": self.placement.reason,
            "vocabulary": self.vocabulary.info() if self.vocabulary else None,
            "batching": {
                "enabled": cfg.enabled,
                "max_batch_ids": cfg.max_batch_ids,
                "max_delay_us": cfg.max_delay_us,
                "max_queue_ids": cfg.max_queue_ids,
                "timeout_ms": cfg.timeout_ms,
            },
        }
