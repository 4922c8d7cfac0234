"""Prometheus metrics of the service, defined once per process (a leaf module: imports nothing of ours)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

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
QUEUE_IDS = Gauge("embedding_queue_ids", "Ids waiting in the table's batch queue.", ["table"])
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
ROW_CACHE = Gauge(
    "embedding_row_cache",
    "JSON row-text cache per table: hits, misses (rows, since start), entries, bytes. Read at scrape time.",
    ["table", "stat"],
)
TABLES_LOADED = Gauge("embedding_tables_loaded", "Tables currently served.")
TABLES_FAILED = Gauge("embedding_tables_failed", "Tables that failed to load.")

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


def set_row_cache(table: str, hits: int, misses: int, entries: int, size_bytes: int) -> None:
    """The row-text cache gauges of one table (read at scrape time)."""
    for stat, value in (("hits", hits), ("misses", misses), ("entries", entries)):
        ROW_CACHE.labels(table, stat).set(value)
    ROW_CACHE.labels(table, "bytes").set(size_bytes)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process: (body, content type)."""
    return generate_latest(), CONTENT_TYPE_LATEST
