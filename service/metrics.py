"""Prometheus metrics of the service, defined once per process (a leaf module: imports nothing of ours)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "Legacy view of the row-text cache (hits, misses, entries, bytes), set at scrape time; "
    "superseded by embedding_row_cache_events_total / _bytes / _entries.",
    ["table", "stat"],
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
TABLES_LOADED = Gauge("embedding_tables_loaded", "Tables currently served.")
TABLES_FAILED = Gauge("embedding_tables_failed", "Tables that failed to load.")
