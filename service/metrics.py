"""Prometheus metrics of the service, defined once per process (a leaf module: imports nothing of ours).

With several worker processes, every worker writes its samples into one per-start folder
(prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, which ``service.cli``
creates fresh and sets before any worker imports prometheus_client); ``exposition()`` sums
them, so a scrape shows the whole server whichever worker answers it. Gauges therefore say
how to combine workers (``multiprocess_mode``).

Per-request observations (request count and time, encode time, backend time) are held in
plain lists (``BufferedHistogram``) and written in bulk: at most every ``FLUSH_SECONDS``
(``flush_periodically``, one task per worker), at a scrape of this worker, and at shutdown.
An observation costs a list append instead of 2-4 us of locked (multiprocess: mmap) writes;
a scrape may miss the other workers' last ``FLUSH_SECONDS``.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections import Counter as Tally
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
_SIZE_BUCKETS = tuple(float(2**i) for i in range(0, 18))

REQUESTS = Counter(
    "embedding_requests_total",
    "Requests answered, by table, route and status.",
    ["table", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "embedding_request_seconds",
    "Time from body read to response sent, by table, route and status.",
    ["table", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_IDS = Histogram(
    "embedding_batch_ids", "Ids per backend call.", ["table"], buckets=_SIZE_BUCKETS
)
BATCH_REQUESTS = Histogram(
    "embedding_batch_requests", "Requests per backend call.", ["table"], buckets=_SIZE_BUCKETS
)
QUEUE_IDS = Gauge(
    "embedding_queue_ids",
    "Ids waiting in the table's batch queues (summed over live workers).",
    ["table"],
    multiprocess_mode="livesum",
)
QUEUE_SECONDS = Histogram(
    "embedding_queue_wait_seconds",
    "Time a request waited before its backend call started.",
    ["table"],
    buckets=_LATENCY_BUCKETS,
)
BACKEND_SECONDS = Histogram(
    "embedding_backend_seconds",
    "Duration of one backend gather call.",
    ["table"],
    buckets=_LATENCY_BUCKETS,
)
ENCODE_SECONDS = Histogram(
    "embedding_encode_seconds",
    "Time to encode a response body.",
    ["table", "format"],
    buckets=_LATENCY_BUCKETS,
)
BATCHER_EVENTS = Counter(
    "embedding_batcher_events_total",
    "Requests the batcher did not compute: rejected (queue full), timed_out, cancelled, failed.",
    ["table", "event"],
)
ROW_CACHE_EVENTS = Counter(
    "embedding_row_cache_events",
    "JSON row-text cache per table: hits and misses (positions), admissions and evictions "
    "(rows), bypassed (requests answered in bulk while the hit rate is low).",
    ["table", "event"],
)
ROW_CACHE_BYTES = Gauge(
    "embedding_row_cache_bytes",
    "Memory the row-text cache accounts for (texts, entry overhead, doorkeeper).",
    ["table"],
    multiprocess_mode="livesum",
)
ROW_CACHE_ENTRIES = Gauge(
    "embedding_row_cache_entries",
    "Rows whose JSON text the row-text cache holds.",
    ["table"],
    multiprocess_mode="livesum",
)
HOT_ROWS = Gauge(
    "embedding_hot_rows",
    "Hot-row cache of Redis tables: hits, misses (rows, since load), entries, capacity. Read at scrape time.",
    ["table", "stat"],
    multiprocess_mode="livesum",
)
CONNECTIONS_CLOSED = Counter(
    "embedding_connections_closed_total",
    "Connections the server closed to protect itself: headers_too_large (431), "
    "head_timeout (slow request head), over_capacity (503, connection cap reached).",
    ["reason"],
)
IDS_IN_FLIGHT = Gauge(
    "embedding_ids_in_flight",
    "Ids admitted and not yet handed to the socket (summed over live workers); each worker "
    "admits at most max_ids_in_flight.",
    multiprocess_mode="livesum",
)
ADMISSION_REFUSED = Counter(
    "embedding_admission_refused_total",
    "Requests answered 503 overloaded because the worker's ids-in-flight budget was full.",
    ["table"],
)
TABLES_LOADED = Gauge(
    "embedding_tables_loaded",
    "Tables currently served (the fewest any live worker serves).",
    multiprocess_mode="livemin",
)
TABLES_FAILED = Gauge(
    "embedding_tables_failed",
    "Tables that failed to load (the most in any live worker).",
    multiprocess_mode="livemax",
)
WORKERS = Gauge("embedding_workers", "Live worker processes serving.", multiprocess_mode="livesum")
ROW_UPDATES = Counter(
    "embedding_row_updates_total",
    "Rows applied by row updates this server wrote (POST /v1/admin/tables/{table}/rows).",
    ["table"],
)
ROW_UPDATE_DELAY = Histogram(
    "embedding_row_update_delay_seconds",
    "From an update's acknowledgement to its application in a worker (one per worker).",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def multiprocess_dir() -> Path | None:
    """The folder the workers write their samples to, when the server runs in multiprocess mode."""
    folder = os.environ.get(MULTIPROC_ENV)
    return Path(folder) if folder else None


def exposition() -> tuple[bytes, str]:
    """The text exposition for ``/metrics`` and its content type: every worker's samples summed."""
    flush_pending()  # this worker's buffered observations, in either mode
    folder = multiprocess_dir()
    if folder is None:  # in-process (tests, embedding the app): this process's own registry
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    # prometheus_client leaves its multiprocess functions unannotated.
    _multiprocess.MultiProcessCollector(registry, str(folder))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop an exited worker's live gauges (its counters and histograms keep counting)."""
    folder = multiprocess_dir()
    if folder is not None:
        _multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]  # as above


UNKNOWN_TABLE = "_unknown"

FLUSH_SECONDS = 1.0  # how stale another worker's request metrics may be at a scrape
_FLUSH_AT = 1024  # observations a buffer holds before it writes them itself


# --- prometheus-client's private histogram fields: used in this section, nowhere else -------
# A bulk write of observations goes through fields prometheus-client keeps private. It is
# pinned to the minor release they were checked on (pyproject.toml);
# tests/unit/dependencies/test_prometheus_internals.py fails, naming the field, when one
# changes, and docs/upgrading.md ("Upgrading prometheus-client") says how to move the pin.

# (class, attribute of its label children, arguments it is called with: None, read only)
PROMETHEUS_RELIED_ON: tuple[tuple[str, str, str | None], ...] = (
    ("prometheus_client.Histogram", "_upper_bounds", None),  # ascending, +Inf last
    ("prometheus_client.Histogram", "_sum", None),  # a value: _sum.inc(total)
    ("prometheus_client.Histogram", "_buckets", None),  # one per bound: _buckets[i].inc(count)
)


def _upper_bounds(histogram_child: Any) -> list[float]:
    """The child's bucket upper bounds, ascending, ``+Inf`` last."""
    return list(histogram_child._upper_bounds)


def _add_to_histogram(histogram_child: Any, total: float, per_bucket: Tally[int]) -> None:
    """What ``observe`` of each value would write: the values' ``total`` into the sum, and
    ``per_bucket`` (bucket index -> values in it) into the buckets (not cumulative: the
    exposition sums them)."""
    histogram_child._sum.inc(total)
    buckets = histogram_child._buckets
    for index, count in per_bucket.items():
        buckets[index].inc(count)


# --- end of prometheus-client's private fields -----------------------------------------------


class BufferedHistogram:
    """A histogram child (and a counter child counting the same events, if given) fed by
    list appends and written in bulk by :meth:`flush`: one sum, one increment per bucket.

    Event-loop thread only, like every observation in the service. Tests compare the bulk
    write against ``observe``.
    """

    __slots__ = ("_bounds", "_counter", "_histogram", "_values")

    def __init__(self, histogram: Any, counter: Any = None) -> None:
        self._histogram = histogram
        self._counter = counter
        self._values: list[float] = []
        self._bounds = _upper_bounds(histogram)
        _BUFFERS.append(self)

    def observe(self, value: float) -> None:
        """Record one observation (and count one event)."""
        values = self._values
        values.append(value)
        if len(values) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write what is held to prometheus-client."""
        values = self._values
        if not values:
            return
        self._values = []
        if self._counter is not None:
            self._counter.inc(len(values))
        bounds = self._bounds
        # Histogram.observe's bucket: the first upper bound >= the value.
        per_bucket = Tally(bisect_left(bounds, value) for value in values)
        _add_to_histogram(self._histogram, sum(values), per_bucket)


_BUFFERS: list[BufferedHistogram] = []
_buffered_children: dict[int, BufferedHistogram] = {}
_request_buffers: dict[tuple[str, str, int], BufferedHistogram] = {}
_encode_buffers: dict[tuple[str, str], BufferedHistogram] = {}


def buffered(histogram_child: Any) -> BufferedHistogram:
    """The buffer of a histogram child (one per child: label children live as long as the
    process, and so do their buffers)."""
    buffer = _buffered_children.get(id(histogram_child))
    if buffer is None:
        buffer = _buffered_children[id(histogram_child)] = BufferedHistogram(histogram_child)
    return buffer


def flush_pending() -> None:
    """Write every buffered observation of this process."""
    for buffer in _BUFFERS:
        buffer.flush()


async def flush_periodically() -> None:
    """Flush every ``FLUSH_SECONDS`` until cancelled, then once more."""
    try:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            flush_pending()
    finally:
        flush_pending()


def observe_request(table: str, route: str, status: int, seconds: float) -> None:
    """Count and time one answered request (unknown tables share ``UNKNOWN_TABLE``)."""
    key = (table, route, status)
    buffer = _request_buffers.get(key)
    if buffer is None:
        labels = (table, route, str(status))
        buffer = _request_buffers[key] = BufferedHistogram(
            REQUEST_SECONDS.labels(*labels), REQUESTS.labels(*labels)
        )
    buffer.observe(seconds)


def observe_encode(table: str, fmt: str, seconds: float) -> None:
    """Time spent building a response body, by table and format."""
    buffer = _encode_buffers.get((table, fmt))
    if buffer is None:
        buffer = _encode_buffers[(table, fmt)] = BufferedHistogram(
            ENCODE_SECONDS.labels(table, fmt)
        )
    buffer.observe(seconds)
