"""What every table's gatherer shares: its knobs, its answer, and its one failure path.

A table gathers through one of two gatherers, chosen by ``BatchingConfig.enabled``:
``DirectGatherer`` (batching off: each request is its own backend call) or ``MicroBatcher``
(batching on: concurrent requests share one). Callers hold a ``TableGatherer`` and never
need to know which.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service import metrics
from service.backends.base import GatherBackend
from service.errors import InternalError, Overloaded, ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """Per-table batching knobs (defaults come from the service settings)."""

    enabled: bool
    max_batch_ids: int = 16384
    max_delay_us: int = 0
    max_queue_ids: int = 1_048_576
    timeout_ms: int = 10_000


@dataclass(frozen=True)
class GatherResult:
    """The rows of one request plus where its time went (the batch's size goes to the
    metrics, not to the request)."""

    rows: np.ndarray
    queue_seconds: float
    backend_seconds: float


_incidents = itertools.count(1)


def _incident_id() -> str:
    """Id shared by the log line of a backend failure and the 500s it caused."""
    return f"{os.getpid():x}-b{next(_incidents):x}"


class TableGatherer(ABC):
    """Gathers the rows of one table's backend for requests; ``gather`` is the call they make
    (``gather_inline`` where ``inline``)."""

    # Clock, replaceable in tests so timing is not measured with sleeps.
    clock = staticmethod(time.perf_counter)

    def __init__(self, backend: GatherBackend, config: BatchingConfig, table: str) -> None:
        self.backend = backend
        self.config = config
        self.table = table
        # True when ``gather_inline`` may be called: the rows come back in the caller's
        # stack, no coroutine to await (only a backend that answers in microseconds).
        self.inline = False
        # Network backends (Redis) are awaited on the loop; the others run on the executor.
        self._gather_async: Callable[[np.ndarray], Awaitable[np.ndarray]] | None = getattr(
            backend, "gather_async", None
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gather-{table}")
        self._failure: BaseException | None = None
        self._closed = False
        self._m_backend = metrics.buffered(metrics.BACKEND_SECONDS.labels(table))
        self._m_events = {
            event: metrics.BATCHER_EVENTS.labels(table, event)
            for event in ("rejected", "timed_out", "cancelled", "failed")
        }

    # ----------------------------------------------------------------- lifecycle
    @abstractmethod
    def start(self) -> None:
        """Start any background work (call from the running event loop)."""

    @property
    def healthy(self) -> bool:
        """False once the gatherer has failed or closed; ``/readyz`` reports it."""
        return self._failure is None and not self._closed

    @property
    def queued_ids(self) -> int:
        """Ids waiting for a batch (none without batching)."""
        return 0

    @abstractmethod
    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) until no request is left; True when drained."""

    async def close(self) -> None:
        """Refuse further requests (503, retry) and stop the gather thread."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------- requests
    @abstractmethod
    async def gather(self, ids: np.ndarray) -> GatherResult:
        """Rows for ``ids`` (1-D int64, validated); raises ``ServiceError`` subclasses."""

    def gather_inline(self, ids: np.ndarray) -> GatherResult:
        """:meth:`gather` without awaiting, for an ``inline`` gatherer: the backend's rows now."""
        if self._closed or self._failure is not None:
            self._check_open()
        start = self.clock()
        rows = self.backend.gather(ids)
        elapsed = self.clock() - start
        self._m_backend.observe(elapsed)
        return GatherResult(rows, 0.0, elapsed)

    def _check_open(self) -> None:
        if self._closed:
            # The table is being replaced or unloaded: a retry reaches the new version.
            raise self._unloading()
        if self._failure is not None:
            raise InternalError("the table's batch worker is not running")

    def _admit(self, held: int, n: int, where: str) -> None:
        """Refuse ``n`` more ids (503, retry) when the gatherer is closed, or when ``held``
        ids are already ``where`` and the two together pass ``max_queue_ids`` (a request
        alone is always let in, whatever its size)."""
        self._check_open()
        if held and held + n > self.config.max_queue_ids:
            self._m_events["rejected"].inc()
            raise Overloaded(f"table {self.table!r} has {held} ids {where}; retry shortly")

    def _backend_call(self, ids: np.ndarray) -> Awaitable[np.ndarray]:
        if self._gather_async is not None:
            return self._gather_async(ids)
        return asyncio.get_running_loop().run_in_executor(self._executor, self.backend.gather, ids)

    def _backend_failed(self, exc: Exception, requests: int, ids: int) -> ServiceError:
        """The error for the ``requests`` whose backend call raised ``exc`` (counted): the
        backend's own answer as it is (e.g. 503 backend_unavailable), anything else a 500
        whose incident id is in the log beside the cause. Other requests are not affected."""
        self._m_events["failed"].inc(requests)
        if isinstance(exc, ServiceError):
            return exc
        incident = _incident_id()
        log.error(
            "backend failure on table %s [request %s] (%d requests, %d ids): %r",
            self.table,
            incident,
            requests,
            ids,
            exc,
            exc_info=exc,
        )
        return InternalError(
            "the backend failed to compute this request; see the service log",
            {"request_id": incident},
        )

    def _unloading(self) -> Overloaded:
        return Overloaded("the table is being unloaded; retry")
