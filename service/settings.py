"""Service-wide settings: environment variables prefixed ``EMBED_``, mirrored by the CLI.

Every field's description says what the knob trades off; ``service.cli``
turns each field into a ``--flag`` with the same text, so ``--help`` and the
environment stay one list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "EMBED_"


class ServiceSettings(BaseSettings):
    """Settings of one service process (and of each of its workers)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    models: Path = Field(
        Path("models/repository"),
        description="Model repository folder. With no table in it, a demo table is written there first.",
    )
    host: str = Field("127.0.0.1", description="Address to bind. 0.0.0.0 inside containers.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes. Each maps the same .npy files (shared page cache), "
        "so memory does not grow N-fold; ORT-CUDA tables are loaded once per worker.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and uvicorn."
    )
    access_log: bool = Field(
        False,
        description="Uvicorn access log. Off by default: it costs ~10% throughput, and more on "
        "small requests (uvicorn writes it from ASGI send, so it turns the direct lane off).",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest request body; larger ones get 413 before they are read whole.",
    )
    max_ids: int = Field(
        100_000,
        ge=1,
        description="Most ids in one request (lookup ids, or all sequence positions).",
    )
    max_ids_in_flight: int = Field(
        300_000,
        ge=0,
        description="Ids per worker admitted at once, every table, batched or not, counted from "
        "decoding until the response has been handed to the socket; past it: 503 overloaded with "
        "Retry-After at once. A larger request is admitted when nothing else is in flight. "
        "Bounds memory and event-loop time per worker (so /healthz stays prompt under a flood); "
        "higher admits more concurrent large requests. 0: no limit.",
    )
    max_output_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest response payload (batch x length x dim x 4 bytes), "
        "checked before anything is allocated.",
    )
    max_head_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request head (request line + headers), counted while it arrives; "
        "over it: 431 headers_too_large and the connection closes. Larger allows bigger tokens "
        "and cookies but lets each connection hold more memory (nginx: large_client_header_buffers).",
    )
    head_timeout_seconds: int = Field(
        10,
        ge=1,
        le=300,
        description="A request head must be complete this long after the connection opens or the "
        "previous response ends, however slowly it trickles in; else the connection is closed. "
        "Shorter frees slow-client (slowloris) connections sooner but cuts off clients on very "
        "slow links (nginx: client_header_timeout).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections per worker; past it a new connection gets 503 overloaded "
        "with Retry-After and is closed. Higher serves more idle keep-alive clients but lets a "
        "flood hold more file descriptors and memory; keep it under the process's file limit "
        "(ulimit -n) (nginx: worker_connections).",
    )
    row_cache_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Memory per worker for cached JSON text of rows (tables are read-only, "
        "so a row's text never changes). Speeds up JSON responses on skewed traffic; 0 turns it off.",
    )
    row_cache_min_hit_rate: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Below this share of looked-up rows found in the row-text cache (per window), "
        "JSON is encoded in bulk without the cache, which keeps sampling to notice skew again.",
    )
    row_cache_window_ids: int = Field(
        16384,
        ge=1,
        description="Looked-up ids per window over which the row-text cache measures its hit rate.",
    )
    row_cache_sample_every: int = Field(
        64,
        ge=1,
        description="While the row-text cache is bypassed, one request in this many still uses it "
        "(to measure the hit rate and admit recurring rows).",
    )
    max_batch_ids: int = Field(
        16384,
        ge=1,
        description="Default per table: most ids gathered in one backend call. "
        "Larger batches amortise per-call cost but delay the requests at the end of a batch.",
    )
    max_delay_us: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Default per table: how long a batch waits for more requests, counted from its "
        "first request's arrival (like Triton's max_queue_delay_microseconds). 0 batches only what "
        "queued while the backend was busy: no added latency at low load.",
    )
    max_queue_ids: int = Field(
        1_048_576,
        ge=1,
        description="Default per table: ids allowed to wait; past it requests get 503 overloaded "
        "with Retry-After instead of queueing without bound.",
    )
    timeout_ms: int = Field(
        10_000,
        ge=1,
        description="Default per table: deadline of a request in the queue; past it 504 timeout.",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated API keys; when set (or api_keys_file is), every /v1 and /v2 "
        "route needs 'Authorization: Bearer <key>'. Compared in constant time, never logged.",
    )
    api_keys_file: Path | None = Field(
        None, description="File with one API key per line (blank lines and # comments ignored)."
    )
    auth_health: bool = Field(
        False,
        description="Also require a key on /healthz, /readyz and /metrics (off: probes stay open).",
    )
    admin_key: SecretStr | None = Field(
        None,
        description="Enables POST /v1/admin/tables/{name}/reload, which must carry this key as a Bearer token.",
    )
    drain_seconds: int = Field(
        30,
        ge=0,
        le=3600,
        description="On SIGTERM, how long in-flight requests may take to finish (after drain_delay_seconds). "
        "Match Kubernetes' terminationGracePeriodSeconds (30) or Docker's stop timeout. Past it the "
        "remaining requests are cut, the log says how many, and the process exits non-zero.",
    )
    drain_delay_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        description="On SIGTERM, keep accepting connections this long while /readyz answers 503 "
        "draining, so load balancers stop routing here before the port closes (a Kubernetes preStop "
        "sleep does the same). A second SIGTERM ends the delay.",
    )
    run_dir: Path | None = Field(
        None,
        description="Per-start folder the workers share: their served table versions, reload requests "
        "and multiprocess metrics (its workers/, reload/ and metrics/ are emptied at start). "
        "Default: a new folder under $TMPDIR, removed at exit.",
    )
    reload_poll_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often each worker checks for reload requests and (with reload_watch_files) "
        "for changed table files.",
    )
    reload_watch_files: bool = Field(
        True,
        description="Reload a table in every worker when its files (table, options, vocabulary) change. "
        "Off: only the admin route and SIGHUP reload.",
    )
    reload_wait_seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description="How long the admin reload waits for every live worker to serve the new version "
        "before it answers 503 reload_incomplete.",
    )
    update_log_grace_seconds: int = Field(
        3600,
        ge=60,
        le=30 * 86400,
        description="Row-update logs of file-table versions no longer current (a replaced or "
        "removed table file) are deleted once untouched (no update written, no worker serving "
        "them) this long; longer keeps them for stragglers and rollbacks, shorter frees the disk.",
    )
    warm_up: bool = Field(
        False,
        description="Default per table: read every page of a table at load, before it is ready, so "
        "the first requests do not pay page faults (costs the read time at start).",
    )
    raw_asgi_front: bool = Field(
        True,
        description="Serve the route table's routes through the raw-ASGI front (the dispatcher "
        "called straight from ASGI) instead of FastAPI's routing machinery (same code, same "
        "answers; off only to measure what it saves). Formerly --fast-path.",
    )
    direct_lane: bool = Field(
        True,
        description="Answer small lookup, sequences, bags and V2 infer requests to tables that "
        "gather inline (numpy, batching off) from the HTTP protocol, without an ASGI task (same "
        "dispatcher, same answers; needs the raw-ASGI front, off with an access log).",
    )
