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
from service.batching.micro_batcher import BatchingConfig, MicroBatcher
from service.encoding.row_text_cache import RowTextCache
from service.errors import (
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
        # What this worker serves (source versions), the reload requests it has answered,
        # published for the other workers of the server (settings.run_dir).
        self.state = WorkerState(settings.run_dir)
        # Source versions a load failed at: not retried until the source changes again.
        self.attempted: dict[str, str] = {}
        self._watcher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ queries
    def get(self, name: str) -> ServedTable:
        """The table called ``name``, or ``TableNotFound``."""
        table = self._tables.get(name)
        if table is None:
            if self.loading:  # this worker may not have reached it yet: not a 404
                raise TableUnavailable(
                    f"table {name!r} is not loaded yet in this worker; retry shortly",
                    {"table": name},
                    {"Retry-After": "1"},
                )
            raise TableNotFound(f"no table named {name!r}", {"table": name})
        return table

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
        # Requests asked before this worker started are answered by this very load.
        self.state.acks = dict(await asyncio.to_thread(self.state.requests))
        folder = Path(self.settings.models)
        sources, problems = await asyncio.to_thread(discover_tables, folder)
        for name, reason in problems.items():
            log.error("table %s not loaded: %s", name, reason)
            self.failures[name] = reason
        for name, source in sources.items():
            version = await self.source_version(source)
            try:
                table = await asyncio.to_thread(self._build, source)
            except TableLoadError as exc:
                log.error("table %s not loaded: %s", name, exc)
                self.failures[name] = str(exc)
                self.attempted[name] = version
                continue
            except Exception as exc:  # a loader bug must not take the other tables down
                log.exception("table %s not loaded", name)
                self.failures[name] = f"{source.path}: unexpected error: {exc!r}"
                self.attempted[name] = version
                continue
            table.batcher.start()
            self._tables[name] = table
            self.state.tables[name] = version
            log.info(
                "table %s: %d x %d %s from %s on %s/%s (%s)",
                name,
                table.rows,
                table.dim,
                table.weights.array.dtype,
                source.path.name,
                table.backend.name,
                table.backend.device,
                table.placement.reason,
            )
        self._count_tables()
        metrics.WORKERS.set(1)
        await asyncio.to_thread(self.state.publish)
        self.loading = False
        watcher = VersionWatcher(
            self, self.settings.reload_poll_seconds, self.settings.reload_watch_files
        )
        self._watcher = asyncio.get_running_loop().create_task(
            watcher.run(), name="version-watcher"
        )

    def _count_tables(self) -> None:
        metrics.TABLES_LOADED.set(len(self._tables))
        metrics.TABLES_FAILED.set(len(self.failures))

    async def source_version(self, source: TableSource) -> str:
        """The version ``source`` holds now; the one place that knows how to read it.

        File tables: a stat-based version of the table file, its int8 scales, options and
        vocabulary (size and mtime of each: cheap enough to ask every poll interval).
        """
        return await asyncio.to_thread(_file_source_version, source)

    def served_version(self, name: str) -> str | None:
        """The source version this worker serves ``name`` at (None: not served)."""
        return self.state.tables.get(name) if name in self._tables else None

    def publish_row_cache_metrics(self) -> None:
        """Set the row-cache gauges from this worker's caches (each worker, every poll)."""
        for table in self.tables():
            cache = table.row_cache
            for stat, value in (
                ("hits", cache.hits),
                ("misses", cache.misses),
                ("entries", len(cache)),
                ("bytes", cache.size_bytes),
            ):
                metrics.ROW_CACHE.labels(table.name, stat).set(value)

    def _build(self, source: TableSource) -> ServedTable:
        options = read_table_options(source.options_path)
        weights = load_npy(source.path) if source.format == "npy" else load_onnx(source.path)
        pad_id = options.pad_id(weights.rows, source.options_path or source.path)
        if options.dtype is not None and options.dtype != weights.stored_dtype:
            raise TableLoadError(
                f"{source.options_path}: dtype = {options.dtype!r} but {source.path.name} holds {weights.stored_dtype}"
            )
        vocabulary = None
        if source.vocab_path is not None:
            vocabulary = Vocabulary.load(
                source.vocab_path,
                weights.rows,
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
            row_cache=RowTextCache(self.settings.row_cache_bytes),
            pad_id=pad_id,
            vocabulary=vocabulary,
        )

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
                if generation is not None:
                    self.state.errors[name] = (generation, str(exc))
                    await asyncio.to_thread(self.state.publish)
                raise
            new.batcher.start()
            old = self._tables.get(name)
            self._tables[name] = new
            self.failures.pop(name, None)
            self.attempted.pop(name, None)
            self.state.tables[name] = version
            if generation is not None:
                self.state.acks[name] = max(generation, self.state.acks.get(name, 0))
                self.state.errors.pop(name, None)
            self._count_tables()
            await asyncio.to_thread(self.state.publish)
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

    async def _load_new_version(self, name: str) -> tuple[ServedTable, str]:
        sources, problems = await asyncio.to_thread(discover_tables, Path(self.settings.models))
        if name not in sources:
            reason = problems.get(name, f"table {name!r} is no longer in the repository")
            raise TableLoadError(reason)
        version = await self.source_version(sources[name])
        try:
            return await asyncio.to_thread(self._build, sources[name]), version
        except Exception as exc:
            self.attempted[name] = version
            if name not in self._tables:
                self.failures[name] = str(exc)
            raise

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
        await table.batcher.drain(drain_seconds)
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
        for table in self._tables.values():
            await table.batcher.close()
            table.close_search()
            table.backend.close()
        self._tables.clear()


def _file_source_version(source: TableSource) -> str:
    scales = scales_path(source.path) if source.path.suffix == ".npy" else None
    files = [source.path, scales, source.options_path, source.vocab_path]
    return file_version(*[path for path in files if path is not None and path.exists()])
