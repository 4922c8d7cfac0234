"""Prometheus metrics of the service, defined once per process (a leaf module: imports nothing of ours).

With several worker processes, every worker writes its samples into one per-start folder
(prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, which ``service.cli``
creates fresh and sets before any worker imports prometheus_client); ``exposition()`` sums
them, so a scrape shows the whole server whichever worker answers it. Gauges therefore say
how to combine workers (``multiprocess_mode``).
"""

from __future__ import annotations

import os
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


def multiprocess_dir() -> Path | None:
    """The folder the workers write their samples to, when the server runs in multiprocess mode."""
    folder = os.environ.get(MULTIPROC_ENV)
    return Path(folder) if folder else None


def exposition() -> tuple[bytes, str]:
    """The text exposition for ``/metrics`` and its content type: every worker's samples summed."""
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

# Label children are cached: ``labels()`` costs more than the rest of a W1 request.
_route_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_encode_children: dict[tuple[str, str], Any] = {}


def observe_request(table: str, route: str, status: int, seconds: float) -> None:
    """Count and time one answered request (unknown tables share ``UNKNOWN_TABLE``)."""
    key = (table, route, status)
    children = _route_children.get(key)
    if children is None:
        children = _route_children[key] = (
            REQUESTS.labels(table, route, str(status)),
            REQUEST_SECONDS.labels(table, route, str(status)),
        )
    children[0].inc()
    children[1].observe(seconds)


def observe_encode(table: str, fmt: str, seconds: float) -> None:
    """Time spent building a response body, by table and format."""
    child = _encode_children.get((table, fmt))
    if child is None:
        child = _encode_children[(table, fmt)] = ENCODE_SECONDS.labels(table, fmt)
    child.observe(seconds)
