"""TableRegistry: loads every table of the model repository and hands them out by name.

A table that fails to load is kept aside with its reason (``/readyz``, logs);
the others still serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

from service import lifecycle, metrics
from service.backends.base import GatherBackend
from service.backends.gpu_memory import gpu_free_bytes
from service.backends.numpy_gather import NumpyGatherBackend
from service.backends.ort_gather import OrtGatherBackend
from service.backends.placement import Placement, choose_placement
from service.backends.redis_gather import RedisGatherBackend
from service.backends.redis_store import (
    STORE_ERRORS,
    RedisClient,
    RedisLayout,
    connect,
    read_current,
    read_meta,
)
from service.batching.micro_batcher import BatchingConfig, MicroBatcher
from service.caches.hot_rows import HotRowCache
from service.caches.row_text_cache import RowTextCache
from service.errors import (
    BackendUnavailable,
    ReloadFailed,
    ReloadIncomplete,
    TableLoadError,
    TableNotFound,
    TableUnavailable,
)
from service.repository.compact import scales_path
from service.repository.discovery import TableSource, discover_tables
from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.options import TableOptions, read_table_options
from service.repository.vocabulary import Vocabulary
from service.repository.weights import TableWeights, file_version
from service.settings import ServiceSettings
from service.tables.served_table import ServedTable
from service.tables.version_watcher import VersionWatcher
from service.tables.worker_state import WorkerState

log = logging.getLogger(__name__)

# Seconds between attempts to load a Redis table whose store could not be read.
REDIS_RETRY_SECONDS = 2.0
# A Redis table's version cannot be read now: bad options, or the store cannot answer.
_VERSION_ERRORS: tuple[type[BaseException], ...] = (TableLoadError, *STORE_ERRORS)
# A reload that failed on a store error is tried again after this many seconds, doubling
# up to the maximum (the watcher polls more often than a store needs to be asked).
TRANSIENT_RETRY_FIRST_SECONDS = 1.0
TRANSIENT_RETRY_MAX_SECONDS = 30.0


class RedisNotReady(TableLoadError):
    """The store of a Redis table cannot be read yet (down, or nothing pushed): retried."""


def transient(exc: BaseException) -> bool:
    """True for a failure of the store rather than of the version (a timeout, a dropped
    connection, nothing pushed yet): the same version is worth trying again."""
    return isinstance(exc, (RedisNotReady, BackendUnavailable, *STORE_ERRORS))


def redacted(url: str) -> str:
    """``url`` without its password, for logs and /readyz."""
    scheme, _, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


BackendFactory = Callable[[TableWeights, Placement], GatherBackend]


def default_backend_factory(weights: TableWeights, placement: Placement) -> GatherBackend:
    """numpy or onnxruntime (CPU/CUDA) as the placement says."""
    if placement.backend == "numpy":
        return NumpyGatherBackend(weights.array, weights.scales)
    return OrtGatherBackend(weights, placement.device, placement.gpu_mem_limit)


def batching_defaults(backend: GatherBackend) -> bool:
    """Batching on for onnxruntime (each run costs ~10-20 us plus copies on CUDA, so sharing
    one run pays), off for numpy (a gather of a few rows costs ~2 us inline; an executor
    hop costs more than it saves). See the README's batching section for the figures."""
    return backend.name != "numpy"


class TableRegistry:
    """Tables by name; ``load`` fills it, ``get`` serves it."""

    def __init__(
        self,
        settings: ServiceSettings,
        backend_factory: BackendFactory = default_backend_factory,
        providers: Callable[[], list[str]] = ort.get_available_providers,
        free_gpu_bytes: Callable[[int], int | None] = gpu_free_bytes,
    ) -> None:
        self.settings = settings
        self._backend_factory = backend_factory
        self._providers = providers
        self._free_gpu_bytes = free_gpu_bytes
        self._tables: dict[str, ServedTable] = {}
        self.failures: dict[str, str] = {}
        self.loading = True
        self._reload_lock = asyncio.Lock()
        self._redis_clients: dict[tuple[str, int], RedisClient] = {}
        self._redis_connecting: dict[tuple[str, int], asyncio.Lock] = {}
        self._redis_retries: dict[str, asyncio.Task[None]] = {}
        # What this worker serves (source versions), the reload requests it has answered,
        # published for the other workers of the server (settings.run_dir).
        self.state = WorkerState(settings.run_dir)
        # Source versions a load failed at: not retried until the source changes again.
        self.attempted: dict[str, str | None] = {}
        # Tables whose last reload failed on a store error: (monotonic retry time, delay).
        self._backoff: dict[str, tuple[float, float]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._publish_lock = asyncio.Lock()

    # ------------------------------------------------------------------ queries
    def get(self, name: str) -> ServedTable:
        """The table called ``name``; ``TableUnavailable`` when it is in the repository but
        failed to load (failed is not missing), else ``TableNotFound``."""
        table = self._tables.get(name)
        if table is None:
            self.check_not_failed(name)
            if self.loading:  # this worker may not have reached it yet: not a 404
                raise TableUnavailable(
                    f"table {name!r} is not loaded yet in this worker; retry shortly",
                    {"table": name},
                    {"Retry-After": "1"},
                )
            raise TableNotFound(f"no table named {name!r}", {"table": name})
        return table

    def check_not_failed(self, name: str) -> None:
        """Raise ``TableUnavailable`` (503, with the load reason) if ``name`` failed to load."""
        reason = self.failures.get(name)
        if reason is not None:
            raise TableUnavailable(
                f"table {name!r} is in the model repository but failed to load",
                {"table": name, "reason": reason},
            )

    def has(self, name: str) -> bool:
        return name in self._tables

    def names(self) -> list[str]:
        return sorted(self._tables)

    def tables(self) -> list[ServedTable]:
        return [self._tables[name] for name in sorted(self._tables)]

    def status(self) -> tuple[str, dict[str, str]]:
        """``ready`` | ``loading`` | ``degraded`` | ``draining`` (SIGTERM received), and failed
        tables (dead batchers included)."""
        failed = dict(self.failures)
        for table in self._tables.values():
            if not table.batcher.healthy:
                failed[table.name] = "batch worker stopped"
        if lifecycle.draining():
            return "draining", failed
        if self.loading:
            return "loading", failed
        return ("degraded" if failed else "ready"), failed

    # ------------------------------------------------------------------ loading
    async def load(self) -> None:
        """Load every table of the repository (file work off the event loop), then follow
        reload requests and changed sources (the version watcher)."""
        # Requests asked before this worker started are answered by this very load (it reads
        # every source after them). Published at once, and again as each table loads: this
        # worker serves a table as soon as it has it, so a reload asked meanwhile must wait
        # for it (it is pending until its watcher reloads), not answer 200 without it.
        self.state.acks = dict(await asyncio.to_thread(self.state.requests))
        await self._publish()
        folder = Path(self.settings.models)
        sources, problems = await asyncio.to_thread(discover_tables, folder)
        for name, reason in problems.items():
            log.error("table %s not loaded: %s", name, reason)
            self.failures[name] = reason
        for name, source in sources.items():
            if await self._load_first(name, source):
                await self._publish()
        self._count_tables()
        metrics.WORKERS.set(1)
        self.loading = False
        watcher = VersionWatcher(
            self, self.settings.reload_poll_seconds, self.settings.reload_watch_files
        )
        self._watcher = asyncio.get_running_loop().create_task(
            watcher.run(), name="version-watcher"
        )

    async def _load_first(self, name: str, source: TableSource) -> bool:
        """Load and serve one table at start-up; False (reason in ``failures``) if it failed.

        Under the reload lock: an admin reload asked during start-up either ran first (the
        table is then served already, at that newer version, and is left as it is) or runs
        after; it never installs its version only to have the start-up load replace it."""
        async with self._reload_lock:
            if name in self._tables:
                return True
            return await self._load_first_locked(name, source)

    async def _load_first_locked(self, name: str, source: TableSource) -> bool:
        version = await self.source_version(source)
        try:
            table, version = await self._build_any(source, version)
        except RedisNotReady as exc:
            log.error("table %s not loaded yet (retrying): %s", name, exc)
            self.failures[name] = str(exc)
            self._retry_redis_later(source)
            return False
        except TableLoadError as exc:
            log.error("table %s not loaded: %s", name, exc)
            self.failures[name] = str(exc)
            self._note_failure(name, version, exc)
            return False
        except Exception as exc:  # a loader bug must not take the other tables down
            log.exception("table %s not loaded", name)
            self.failures[name] = f"{source.path}: unexpected error: {exc!r}"
            self._note_failure(name, version, exc)
            return False
        table.batcher.start()
        self._tables[name] = table
        self.state.tables[name] = version
        log.info(
            "table %s: %d x %d %s from %s on %s/%s (%s)",
            name,
            table.rows,
            table.dim,
            table.weights.stored_dtype,
            source.path.name,
            table.backend.name,
            table.backend.device,
            table.placement.reason,
        )
        return True

    async def _publish(self) -> None:
        """Write this worker's state file: encoded here on the loop (which changes the dicts),
        written on a thread; one write at a time, so an older state never lands last."""
        async with self._publish_lock:
            await asyncio.to_thread(self.state.write, self.state.encode())

    def _count_tables(self) -> None:
        metrics.TABLES_LOADED.set(len(self._tables))
        metrics.TABLES_FAILED.set(len(self.failures))

    def served_version(self, name: str) -> str | None:
        """The source version this worker serves ``name`` at (None: not served)."""
        return self.state.tables.get(name) if name in self._tables else None

    def publish_row_cache_metrics(self) -> None:
        """Move this worker's cache counts into the metrics (each worker, every poll, and
        before a scrape): the row-text cache's events and the Redis hot-row gauges."""
        for table in self.tables():
            table.row_cache.publish_metrics()
            hot = getattr(table.backend, "cache", None)  # Redis tables' hot-row cache
            if isinstance(hot, HotRowCache):
                for stat, value in (
                    ("hits", hot.hits),
                    ("misses", hot.misses),
                    ("entries", len(hot)),
                    ("capacity", hot.capacity),
                ):
                    metrics.HOT_ROWS.labels(table.name, stat).set(value)

    async def _build_any(
        self, source: TableSource, version: str | None
    ) -> tuple[ServedTable, str | None]:
        """The table and the source version it serves. ``version``: the file table's version
        read before the build (files changed during it read as changed next poll); a Redis
        table serves the version it pinned, whatever the pointer says by now."""
        if source.format != "redis":
            return await asyncio.to_thread(self._build, source), version
        files = await asyncio.to_thread(_file_source_version, source)
        table = await self._build_redis(source)
        return table, _redis_source_version(table.weights.version, files)

    @staticmethod
    def _pad_and_vocabulary(
        source: TableSource, options: TableOptions, rows: int, stored_dtype: str
    ) -> tuple[int | None, Vocabulary | None]:
        pad_id = options.pad_id(rows, source.options_path or source.path)
        if options.dtype is not None and options.dtype != stored_dtype:
            raise TableLoadError(
                f"{source.options_path}: dtype = {options.dtype!r} but {source.path.name} holds {stored_dtype}"
            )
        vocabulary = None
        if source.vocab_path is not None:
            vocabulary = Vocabulary.load(
                source.vocab_path,
                rows,
                options.oov,
                options.num_oov_indices,
                options.oov_token,
                options.mask_token,
            )
            if vocabulary.mask_row is not None:
                if pad_id not in (None, vocabulary.mask_row):
                    raise TableLoadError(
                        f"{source.vocab_path}: mask_token is row {vocabulary.mask_row}, the padding id is {pad_id}"
                    )
                pad_id = vocabulary.mask_row
        return pad_id, vocabulary

    def _build(self, source: TableSource) -> ServedTable:
        options = read_table_options(source.options_path)
        if options.redis is not None:
            raise TableLoadError(
                f"{source.options_path}: redis is set but {source.path.name} lies beside it; "
                "a Redis table's .toml has no weights file beside it"
            )
        weights = load_npy(source.path) if source.format == "npy" else load_onnx(source.path)
        pad_id, vocabulary = self._pad_and_vocabulary(
            source, options, weights.rows, weights.stored_dtype
        )
        if weights.scales is not None:
            # int8 codes are dequantised by the numpy backend (ORT would need a Cast/Mul graph).
            if options.backend == "onnxruntime" or options.device.startswith("cuda"):
                raise TableLoadError(
                    f"{source.path}: int8 tables are served by the numpy backend on the CPU"
                )
            options = options.model_copy(update={"backend": "numpy", "device": "cpu"})
        warm_up = options.warm_up if options.warm_up is not None else self.settings.warm_up
        if warm_up:
            started = time.perf_counter()
            touched = weights.warm_up()
            log.info(
                "table %s: warmed up %d MiB in %.2f s",
                source.name,
                touched >> 20,
                time.perf_counter() - started,
            )
        placement = choose_placement(
            device=options.device,
            backend=options.backend,
            table_format=weights.format,
            table_bytes=weights.array.nbytes,
            providers=self._providers(),
            free_gpu_bytes=self._free_gpu_bytes,
            source=str(source.path),
        )
        try:
            backend = self._backend_factory(weights, placement)
        except TableLoadError:
            raise
        except Exception as exc:
            raise TableLoadError(
                f"{source.path}: backend {placement.backend} failed: {exc}"
            ) from exc
        return ServedTable(
            name=source.name,
            weights=weights,
            options=options,
            placement=placement,
            backend=backend,
            batcher=MicroBatcher(backend, self._batching(options, backend), source.name),
            # A numpy gather copies a repeated row again; other backends pay more for it.
            row_cache=RowTextCache.from_settings(
                self.settings, source.name, repeats_cheap=backend.inline_safe
            ),
            pad_id=pad_id,
            vocabulary=vocabulary,
        )

    async def _build_redis(self, source: TableSource) -> ServedTable:
        """A table whose rows live in Redis, pinned to the version current now."""
        options = await asyncio.to_thread(read_table_options, source.options_path)
        path = source.path
        if options.redis is None:
            raise TableLoadError(
                f"{path}: no .npy or .onnx beside it and no `redis` URL: not a table"
            )
        if options.backend is not None or options.device not in ("auto", "cpu"):
            raise TableLoadError(
                f"{path}: a Redis table takes neither `backend` nor a GPU `device`"
            )
        where = redacted(options.redis)
        layout = RedisLayout(source.name)
        try:
            client = await self._redis_client(options.redis, options.redis_timeout_ms)
            async with asyncio.timeout(max(5.0, options.redis_timeout_ms / 1000)):
                version = await read_current(client, layout)
                meta = None if version is None else await read_meta(client, layout, version, where)
        except STORE_ERRORS as exc:
            raise RedisNotReady(f"{path}: Redis at {where} cannot be read: {exc!r}") from None
        if meta is None:
            raise RedisNotReady(
                f"{path}: no complete version of table {source.name!r} in Redis at {where} "
                "(push it with `embedding-service push`)"
            )
        pad_id, vocabulary = self._pad_and_vocabulary(source, options, meta.rows, meta.dtype)
        backend = RedisGatherBackend(
            client, layout, meta, options.cache_rows, options.redis_timeout_ms
        )
        return ServedTable(
            name=source.name,
            weights=meta,
            options=options,
            placement=Placement(
                "redis",
                "cpu",
                f"rows in Redis at {where}; {backend.cache.capacity} hot rows cached",
            ),
            backend=backend,
            batcher=MicroBatcher(backend, self._batching(options, backend), source.name),
            # Rows outside the hot-row cache are read from Redis (API.md): no text cache.
            row_cache=RowTextCache(0),
            pad_id=pad_id,
            vocabulary=vocabulary,
        )

    async def _redis_client(self, url: str, timeout_ms: int) -> RedisClient:
        """One client (and connection pool) per store URL and timeout, shared by its tables."""
        key = (url, timeout_ms)
        client = self._redis_clients.get(key)
        if client is not None:
            return client
        # One connect per key at a time: two tables (or a load and the watcher) asking at
        # once would each make a client and the first stored would leak.
        async with self._redis_connecting.setdefault(key, asyncio.Lock()):
            client = self._redis_clients.get(key)
            if client is None:
                client = await connect(url, timeout_ms / 1000)
                self._redis_clients[key] = client
        return client

    def _retry_redis_later(self, source: TableSource) -> None:
        if source.name not in self._redis_retries:
            task = asyncio.get_running_loop().create_task(self._retry_redis(source))
            self._redis_retries[source.name] = task

    async def _retry_redis(self, source: TableSource) -> None:
        """Load a Redis table once its store answers; until then it stays failed in /readyz."""
        try:
            while True:
                await asyncio.sleep(REDIS_RETRY_SECONDS)
                try:
                    table, version = await self._build_any(source, None)
                except RedisNotReady as exc:
                    self.failures[source.name] = str(exc)
                    continue
                except Exception as exc:
                    log.error("table %s not loaded: %s", source.name, exc)
                    self.failures[source.name] = str(exc)
                    return
                async with self._reload_lock:
                    if source.name not in self._tables:
                        table.batcher.start()
                        self._tables[source.name] = table
                        self.state.tables[source.name] = version
                        self.failures.pop(source.name, None)
                        await self._publish()  # the state file says what this worker serves
                        metrics.TABLES_LOADED.set(len(self._tables))
                        metrics.TABLES_FAILED.set(len(self.failures))
                        log.info("table %s loaded from Redis", source.name)
                return
        finally:
            self._redis_retries.pop(source.name, None)

    async def source_version(self, source: TableSource) -> str | None:
        """The version ``source`` holds now; the one place that knows how to read it (cheap:
        the version watcher asks every poll interval).

        File tables: a stat-based version of the table file, its int8 scales, options and
        vocabulary. Redis tables: one ``GET`` of the current-version pointer, with the options
        file's version. ``None``: cannot tell now (store unreachable, nothing pushed, file
        gone) -- keep serving what is loaded.
        """
        try:
            files = await asyncio.to_thread(_file_source_version, source)
        except OSError:
            return None
        if source.format != "redis":
            return files
        try:
            options = read_table_options(source.options_path)
            if options.redis is None:
                return None
            client = await self._redis_client(options.redis, options.redis_timeout_ms)
            async with asyncio.timeout(options.redis_timeout_ms / 1000):
                pointer = await read_current(client, RedisLayout(source.name))
        except _VERSION_ERRORS:
            return None
        return None if pointer is None else _redis_source_version(pointer, files)

    def _batching(self, options: TableOptions, backend: GatherBackend) -> BatchingConfig:
        s = self.settings
        return BatchingConfig(
            enabled=options.batching
            if options.batching is not None
            else batching_defaults(backend),
            max_batch_ids=options.max_batch_ids or s.max_batch_ids,
            max_delay_us=options.max_delay_us
            if options.max_delay_us is not None
            else s.max_delay_us,
            max_queue_ids=options.max_queue_ids or s.max_queue_ids,
            timeout_ms=options.timeout_ms or s.timeout_ms,
        )

    def gathers_inline(self, name: str) -> bool:
        """True when ``name`` is loaded and gathers in the caller's stack (numpy, batching
        off): a request to it can be answered without waiting on the event loop."""
        table = self._tables.get(name)
        return table is not None and table.batcher.inline

    def batched(self, name: str) -> bool:
        """True when the table queues requests (so a client that leaves can be skipped)."""
        table = self._tables.get(name)
        return table is not None and table.batcher.config.enabled

    async def reload(self, name: str) -> ServedTable:
        """Reload ``name`` in every worker of the server; returns once all of them serve it.

        This worker loads the new version first (a ``TableLoadError`` here changes nothing
        anywhere); then it asks every worker to reload and waits, up to
        ``settings.reload_wait_seconds``, until each live worker has confirmed. A worker that
        failed to load raises ``ReloadFailed`` (409), one that did not answer in time
        ``ReloadIncomplete`` (503): never a success unless every worker serves the new version.
        """
        generation = time.time_ns()
        table = await self.reload_local(name, generation)
        await asyncio.to_thread(self.state.request_reload, name, generation)
        deadline = time.monotonic() + self.settings.reload_wait_seconds
        while True:
            outcome = await asyncio.to_thread(self.state.outcome, name, generation)
            if outcome.failed:
                reasons = "; ".join(f"worker {pid}: {why}" for pid, why in outcome.failed.items())
                raise ReloadFailed(
                    f"table {name!r} version {table.weights.version} loaded in worker "
                    f"{self.state.pid} but failed in others, which keep their previous version: {reasons}"
                )
            if outcome.complete:
                return table
            if time.monotonic() >= deadline:
                raise ReloadIncomplete(
                    f"table {name!r} version {table.weights.version} serves in worker "
                    f"{self.state.pid}, but worker(s) {outcome.pending} did not confirm within "
                    f"{self.settings.reload_wait_seconds} s; they serve their previous version "
                    "until they do (the request stands: they reload when they get to it)",
                    {"table": name, "pending_workers": outcome.pending},
                )
            await asyncio.sleep(0.05)

    async def reload_local(self, name: str, generation: int | None = None) -> ServedTable:
        """Load ``name`` again in this worker beside the serving version, then swap.

        The swap is one dict assignment on the event loop: requests that already hold the
        old version finish on it (its batcher is drained, then closed); later ones get the
        new one. If the new version fails to load, the old one keeps serving. ``generation``:
        the reload request this answers (acknowledged to the other workers, or its failure).
        """
        async with self._reload_lock:
            try:
                new, version = await self._load_new_version(name)
            except Exception as exc:
                # A store error is no answer to the request: it stays pending (the asking
                # worker says reload_incomplete) and the watcher tries it again.
                if generation is not None and not transient(exc):
                    self.state.errors[name] = (generation, str(exc))
                    await self._publish()
                raise
            new.batcher.start()
            old = self._tables.get(name)
            self._tables[name] = new
            self.failures.pop(name, None)
            self.attempted.pop(name, None)
            self._backoff.pop(name, None)
            self.state.tables[name] = version
            if generation is not None:
                self.state.acks[name] = max(generation, self.state.acks.get(name, 0))
                self.state.errors.pop(name, None)
            self._count_tables()
            await self._publish()
            log.info(
                "table %s reloaded: version %s -> %s",
                name,
                old.weights.version if old else None,
                new.weights.version,
            )
        if old is not None:
            asyncio.get_running_loop().create_task(
                self._retire(old, float(self.settings.drain_seconds))
            )
        return new

    async def _load_new_version(self, name: str) -> tuple[ServedTable, str | None]:
        sources, problems = await asyncio.to_thread(discover_tables, Path(self.settings.models))
        if name not in sources:
            reason = problems.get(name, f"table {name!r} is no longer in the repository")
            raise TableLoadError(reason)
        version = await self.source_version(sources[name])
        try:
            return await self._build_any(sources[name], version)
        except Exception as exc:
            self._note_failure(name, version, exc)
            if name not in self._tables:
                self.failures[name] = str(exc)
            raise

    def _note_failure(self, name: str, version: str | None, exc: BaseException) -> None:
        """A store error is retried after a backoff; any other failure waits for the source to
        change (a version that does not load will not load next poll either)."""
        if transient(exc):
            delay = self._backoff.get(name, (0.0, TRANSIENT_RETRY_FIRST_SECONDS / 2))[1] * 2
            delay = min(delay, TRANSIENT_RETRY_MAX_SECONDS)
            self._backoff[name] = (time.monotonic() + delay, delay)
        else:
            # The store answered: no backoff left over from an earlier store error may hold
            # back the next version.
            self._backoff.pop(name, None)
            self.attempted[name] = version

    def retry_due(self, name: str) -> bool:
        """False while ``name`` waits out the backoff of a reload that failed on a store error."""
        entry = self._backoff.get(name)
        return entry is None or time.monotonic() >= entry[0]

    async def reload_all(self) -> None:
        """Reload every table of the repository in every worker (SIGHUP); failures keep the
        old versions."""
        sources, _ = await asyncio.to_thread(discover_tables, Path(self.settings.models))
        for name in sorted(set(sources) | set(self._tables)):
            try:
                await self.reload(name)
            except Exception as exc:
                log.error(
                    "reload of table %s failed, the previous version keeps serving: %s", name, exc
                )

    async def _retire(self, table: ServedTable, drain_seconds: float) -> None:
        await table.drain(drain_seconds)  # its batcher and its searches
        await table.batcher.close()
        table.close_search()
        table.backend.close()

    async def close(self) -> None:
        """Stop the version watcher, every batcher, and release every backend."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        with contextlib.suppress(OSError):
            self.state.withdraw()
        metrics.WORKERS.set(0)
        for task in list(self._redis_retries.values()):
            task.cancel()
        for table in self._tables.values():
            await table.batcher.close()
            table.close_search(cancel_queued=True)  # the server's drain is over
            table.backend.close()
        self._tables.clear()
        for client in self._redis_clients.values():
            try:
                await client.aclose()
            except Exception as exc:  # closing a dead connection must not stop the shutdown
                log.debug("closing a Redis client: %r", exc)
        self._redis_clients.clear()


def _redis_source_version(pointer: str, files: str) -> str:
    """A Redis table's source version: its store's version, then its options file's."""
    return f"{pointer}:{files}"


def _file_source_version(source: TableSource) -> str:
    scales = scales_path(source.path) if source.path.suffix == ".npy" else None
    files = [source.path, scales, source.options_path, source.vocab_path]
    return file_version(*[path for path in files if path is not None and path.exists()])
