"""The gatherer of a table with batching on: concurrent requests share one backend call.

Design (after mosec's and TEI's batchers): requests put ``(ids, future,
enqueued_at)`` on one bounded queue; a single worker task blocks for the first
request, then fills the batch until ``max_batch_ids`` ids or until
``max_delay_us`` has passed since that *first request's arrival*. The gather
runs on one executor thread per table, so the event loop keeps accepting and
the next batch forms while one runs. Entries whose future is already done
(deadline passed, client gone) are skipped when the batch is built. If the
worker ever dies, every pending future fails and ``healthy`` turns false:
nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar

import numpy as np

from service import metrics
from service.backends.base import GatherBackend
from service.batching.gatherer import BatchingConfig, GatherResult, TableGatherer
from service.errors import InternalError, ServiceError, Timeout

log = logging.getLogger(__name__)


CLIENT_GONE: ContextVar[Callable[[], bool] | None] = ContextVar("client_gone", default=None)
"""Set by the caller for the request its task serves: true once nobody waits for the answer
(the HTTP client disconnected). A queued request for which it holds is dropped when its
batch is built (its ``gather`` raises ``CancelledError``) instead of being computed."""


class _Entry:
    __slots__ = ("enqueued", "future", "gone", "ids", "timer")

    def __init__(
        self,
        ids: np.ndarray,
        future: asyncio.Future[GatherResult],
        enqueued: float,
        gone: Callable[[], bool] | None = None,
    ):
        self.ids = ids
        self.future = future
        self.enqueued = enqueued
        self.gone = gone
        self.timer: asyncio.TimerHandle | None = None


class MicroBatcher(TableGatherer):
    """Batches the gathers of one backend (a table with batching on)."""

    def __init__(self, backend: GatherBackend, config: BatchingConfig, table: str) -> None:
        if not config.enabled:
            raise ValueError(f"table {table!r} does not batch: its gatherer is a DirectGatherer")
        super().__init__(backend, config, table)
        self._queue: deque[_Entry] = deque()
        self._queued_ids = 0
        self._running = 0  # requests in the batch being gathered now
        # The batch the worker is still filling (max_delay_us): off the queue, not yet
        # running, but the drain must wait for it all the same.
        self._filling: list[_Entry] = []
        self._draining = False
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._m_queue = metrics.QUEUE_IDS.labels(table)
        self._m_wait = metrics.buffered(metrics.QUEUE_SECONDS.labels(table))
        self._m_batch_ids = metrics.buffered(metrics.BATCH_IDS.labels(table))
        self._m_batch_requests = metrics.buffered(metrics.BATCH_REQUESTS.labels(table))

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the worker task (call from the running event loop)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self.table}"
            )
            self._worker.add_done_callback(self._worker_ended)

    @property
    def queued_ids(self) -> int:
        """Ids waiting in the queue for a batch."""
        return self._queued_ids

    @property
    def filling_requests(self) -> int:
        """Requests taken off the queue into the batch still forming (``max_delay_us``)."""
        return len(self._filling)

    async def close(self) -> None:
        """Stop the worker; requests still queued fail with 503 rather than hang."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        self._fail_pending(self._unloading())
        await super().close()

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued, being filled or running (bounded); True when drained.

        A batch still being filled is sent at once rather than after ``max_delay_us``: the
        table is being retired, so no more requests are coming to join it."""
        self._draining = True
        self._wakeup.set()
        deadline = self.clock() + timeout
        while self._busy() and self.clock() < deadline:
            await asyncio.sleep(0.005)
        return not self._busy()

    def _busy(self) -> bool:
        filling = any(not entry.future.done() for entry in self._filling)
        return bool(self._queue or self._running or filling)

    # ------------------------------------------------------------------- requests
    async def gather(self, ids: np.ndarray) -> GatherResult:
        """Rows for ``ids`` (1-D int64, validated); raises ``ServiceError`` subclasses."""
        n = int(ids.size)
        self._admit(self._queued_ids, n, "queued")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[GatherResult] = loop.create_future()
        entry = _Entry(ids, future, self.clock(), CLIENT_GONE.get())
        entry.timer = loop.call_later(self.config.timeout_ms / 1000, self._expire, entry)
        self._queue.append(entry)
        self._queued_ids += n
        self._m_queue.set(self._queued_ids)
        self._wakeup.set()
        try:
            return await future
        finally:
            entry.timer.cancel()

    def _expire(self, entry: _Entry) -> None:
        if not entry.future.done():
            self._m_events["timed_out"].inc()
            entry.future.set_exception(
                Timeout(
                    f"the request waited more than {self.config.timeout_ms} ms",
                    {"timeout_ms": self.config.timeout_ms},
                )
            )

    # --------------------------------------------------------------------- worker
    def _pop_ready(self, batch: list[_Entry], batch_ids: int) -> int:
        """Move queued entries into ``batch`` up to ``max_batch_ids``; skip finished ones."""
        limit = self.config.max_batch_ids
        queue = self._queue
        while queue:
            entry = queue[0]
            n = int(entry.ids.size)
            if not entry.future.done() and entry.gone is not None and entry.gone():
                entry.future.cancel()  # its client left: nobody waits for these rows
            if entry.future.done():
                queue.popleft()
                self._queued_ids -= n
                if entry.future.cancelled():
                    self._m_events["cancelled"].inc()
                continue
            # A request is one unit: never split, but always take at least one.
            if batch and batch_ids + n > limit:
                break
            queue.popleft()
            self._queued_ids -= n
            batch.append(entry)
            batch_ids += n
        self._m_queue.set(self._queued_ids)
        return batch_ids

    async def _run(self) -> None:
        delay = self.config.max_delay_us / 1_000_000
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._fill(delay)
            if batch:
                # No await between the fill and `_execute` counting the batch as running:
                # the drain always sees it, filling or running.
                await self._execute(batch)

    async def _fill(self, delay: float) -> list[_Entry]:
        """The next batch, its live entries only; tracked in ``_filling`` while it forms."""
        batch: list[_Entry] = []
        self._filling = batch
        try:
            batch_ids = self._pop_ready(batch, 0)
            if delay > 0 and batch:
                await self._wait_for_more(batch, batch_ids, delay)
        except asyncio.CancelledError:
            # The worker is being stopped (table retired): answer what was taken off the queue.
            self._fail(batch, self._unloading())
            raise
        except Exception:
            self._fail(batch, InternalError("the table's batch worker stopped"))
            raise
        finally:
            self._filling = []
        return [e for e in batch if not e.future.done()]

    async def _wait_for_more(self, batch: list[_Entry], batch_ids: int, delay: float) -> None:
        """Fill until the batch is full, the table drains, or `delay` has passed since the
        FIRST request arrived (not since this worker woke up)."""
        close_at = batch[0].enqueued + delay
        while batch_ids < self.config.max_batch_ids and not self._draining:
            remaining = close_at - self.clock()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch_ids = self._pop_ready(batch, batch_ids)
            if self._queue:  # the next one did not fit: batch is full
                break

    async def _execute(self, batch: list[_Entry]) -> None:
        ids = batch[0].ids if len(batch) == 1 else np.concatenate([e.ids for e in batch])
        started = self.clock()
        self._running = len(batch)
        try:
            rows = await self._backend_call(ids)
        except asyncio.CancelledError:
            # The worker is being stopped mid-gather: answer this batch, never abandon it.
            self._fail(batch, self._unloading())
            raise
        except Exception as exc:
            # Only this batch's requests fail; the worker goes on with the next batch.
            self._fail(batch, self._backend_failed(exc, len(batch), int(ids.size)))
            return
        finally:
            self._running = 0
        self._deliver(batch, rows, started, int(ids.size))

    @staticmethod
    def _fail(entries: Iterable[_Entry], error: ServiceError) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)

    def _deliver(self, batch: list[_Entry], rows: np.ndarray, started: float, total: int) -> None:
        """Each request's own slice of the batch's rows, by offset."""
        backend_seconds = self.clock() - started
        self._m_backend.observe(backend_seconds)
        self._m_batch_ids.observe(total)
        self._m_batch_requests.observe(len(batch))
        offset = 0
        for entry in batch:
            n = int(entry.ids.size)
            if not entry.future.done():
                wait = started - entry.enqueued
                self._m_wait.observe(wait)
                entry.future.set_result(
                    GatherResult(rows[offset : offset + n], wait, backend_seconds)
                )
            offset += n

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        if self._closed:
            return
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        self._failure = exc or RuntimeError("batch worker returned")
        log.critical("batch worker of table %s died: %r", self.table, self._failure)
        self._fail_pending(InternalError("the table's batch worker stopped"))

    def _fail_pending(self, error: ServiceError) -> None:
        self._fail(self._queue, error)
        self._queue.clear()
        self._queued_ids = 0
        self._m_queue.set(0)
