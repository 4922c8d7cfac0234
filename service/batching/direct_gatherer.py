"""The gatherer of a table with batching off: each request is its own backend call."""

from __future__ import annotations

import asyncio

import numpy as np

from service.backends.base import GatherBackend
from service.batching.gatherer import BatchingConfig, GatherResult, TableGatherer


class DirectGatherer(TableGatherer):
    """Gathers each request on its own: in the caller's stack (``inline``) when the backend
    computes in microseconds (numpy), else on the table's gather thread (or awaited, for a
    network backend), bounded by ``max_queue_ids`` ids in flight."""

    def __init__(self, backend: GatherBackend, config: BatchingConfig, table: str) -> None:
        if config.enabled:
            raise ValueError(f"table {table!r} batches: its gatherer is a MicroBatcher")
        super().__init__(backend, config, table)
        self.inline = bool(backend.inline_safe)
        self._inflight_ids = 0  # executor calls in progress

    def start(self) -> None:
        """Nothing to start: each request calls the backend itself."""

    async def drain(self, timeout: float) -> bool:
        """Wait until no call is in flight (bounded); True when drained."""
        deadline = self.clock() + timeout
        while self._inflight_ids and self.clock() < deadline:
            await asyncio.sleep(0.005)
        return not self._inflight_ids

    async def gather(self, ids: np.ndarray) -> GatherResult:
        """Rows for ``ids`` (1-D int64, validated); raises ``ServiceError`` subclasses."""
        if self.inline:
            return self.gather_inline(ids)
        n = int(ids.size)
        self._admit(self._inflight_ids, n, "in flight")
        start = self.clock()
        self._inflight_ids += n
        try:
            rows = await self._backend_call(ids)
        except Exception as exc:
            raise self._backend_failed(exc, 1, n) from None
        finally:
            self._inflight_ids -= n
        elapsed = self.clock() - start
        self._m_backend.observe(elapsed)
        return GatherResult(rows, 0.0, elapsed)
