"""Building a ServedTable from its source: weights from a file or a Redis store, the backend
(one place), padding and vocabulary, the gatherer and its batching knobs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from service.backends.base import GatherBackend
from service.backends.numpy_gather import NumpyGatherBackend
from service.backends.ort_gather import OrtGatherBackend
from service.backends.placed import build_placed_backend
from service.backends.placement import Placement, choose_placement, held_gpu_bytes
from service.backends.redis_gather import RedisGatherBackend
from service.backends.redis_store import (
    STORE_ERRORS,
    RedisLayout,
    RedisTableMeta,
    read_current,
    read_meta,
)
from service.batching.direct_gatherer import DirectGatherer
from service.batching.gatherer import BatchingConfig, TableGatherer
from service.batching.micro_batcher import MicroBatcher
from service.caches.row_text_cache import RowTextCache
from service.errors import TableLoadError
from service.repository.discovery import TableSource
from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.options import TableOptions, read_table_options
from service.repository.vocabulary import Vocabulary
from service.repository.weights import TableWeights
from service.settings import ServiceSettings
from service.tables.served_table import ServedTable
from service.tables.source_versions import file_source_version, redis_source_version
from service.tables.store_clients import StoreClients, redacted
from service.tables.table_updates import RedisTableUpdates, attach_updates
from service.updates.base_manifest import FileIdentity, is_compacted_base

log = logging.getLogger(__name__)


class RedisNotReady(TableLoadError):
    """The store of a Redis table cannot be read yet (down, or nothing pushed): retried."""


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


async def _with_updates(table: ServedTable, clients: StoreClients) -> None:
    """Attach a freshly built file table's row updates; if that fails, its backend is
    closed before the error goes on (on a GPU it would hold its memory until collected)."""
    try:
        await attach_updates(table, clients)  # row updates (issue 25)
    except BaseException:
        table.backend.close()
        raise


def _load_weights(source: TableSource) -> TableWeights:
    """The table file mapped. A base file a compaction wrote (checked rows with checked
    updates laid over) is not scanned for NaN/Inf again: every worker loads it after each
    fold, and the scan would read the whole table in each of them."""
    if source.format != "npy":
        return load_onnx(source.path)
    before = FileIdentity.of(source.path)
    compacted = is_compacted_base(source.path)
    weights = load_npy(source.path, check_values=not compacted)
    if compacted and FileIdentity.of(source.path) != before:
        # Renamed over while it was mapped: the file mapped may not be the one recorded.
        raise TableLoadError(f"{source.path}: the file changed while it was loaded; retrying")
    return weights


class TableBuilder:
    """Builds tables; holds no table itself (the registry installs what it builds)."""

    def __init__(
        self,
        settings: ServiceSettings,
        clients: StoreClients,
        backend_factory: BackendFactory,
        providers: Callable[[], list[str]],
        free_gpu_bytes: Callable[[int], int | None],
        serving: Callable[[str], ServedTable | None],
    ) -> None:
        self.settings = settings
        # The version a reload replaces: the GPU room it holds counts as free for the new one.
        self._serving = serving
        self._clients = clients
        self._backend_factory = backend_factory
        self._providers = providers
        self._free_gpu_bytes = free_gpu_bytes

    async def build(
        self, source: TableSource, version: str | None
    ) -> tuple[ServedTable, str | None]:
        """The table and the source version it serves. ``version``: the file table's version
        read before the build (files changed during it read as changed next poll); a Redis
        table serves the version it pinned, whatever the pointer says by now."""
        if source.format != "redis":
            table = await asyncio.to_thread(self._build_file, source)
            await _with_updates(table, self._clients)
            return table, version
        files = await asyncio.to_thread(file_source_version, source)
        table = await self._build_redis(source)
        await attach_updates(table, self._clients)  # row updates (issue 25)
        return table, redis_source_version(table.weights.version, files)

    async def build_version(self, source: TableSource, options: TableOptions) -> ServedTable:
        """Version ``source.version`` of a versioned table or group member, with ``options``
        (read by the repository layer: a versioned ``table.toml`` also holds the policy). It
        serves beside the other versions: it replaces none (no GPU room is reclaimed)."""
        table = await asyncio.to_thread(self._build_file, source, options)
        await _with_updates(table, self._clients)
        return table

    def _build_file(self, source: TableSource, given: TableOptions | None = None) -> ServedTable:
        options = read_table_options(source.options_path) if given is None else given
        if options.redis is not None:
            raise TableLoadError(
                f"{source.options_path}: redis is set but {source.path.name} lies beside it; "
                "a Redis table's .toml has no weights file beside it"
            )
        weights = _load_weights(source)
        pad_id, vocabulary = _pad_and_vocabulary(
            source, options, weights.rows, weights.stored_dtype
        )
        if weights.scales is not None:
            # int8 codes are dequantised by the numpy backend (ORT would need a Cast/Mul graph).
            if options.backend == "onnxruntime" or options.device.startswith("cuda"):
                raise TableLoadError(
                    f"{source.path}: int8 tables are served by the numpy backend on the CPU"
                )
            options = options.model_copy(update={"backend": "numpy", "device": "cpu"})
        self._warm_up(source, options, weights)
        placement, backend = self._backend(source, options, weights, given is None)
        return ServedTable(
            name=source.name,
            weights=weights,
            options=options,
            placement=placement,
            backend=backend,
            batcher=self._gatherer(source.name, options, backend),
            # A numpy gather copies a repeated row again; other backends pay more for it.
            row_cache=RowTextCache.from_settings(
                self.settings, source.name, repeats_cheap=backend.inline_safe
            ),
            pad_id=pad_id,
            vocabulary=vocabulary,
            served_version="" if source.version is None else str(source.version),
        )

    def _warm_up(self, source: TableSource, options: TableOptions, weights: TableWeights) -> None:
        """Touch every page of the weights now, if asked, rather than on the first requests."""
        if not (options.warm_up if options.warm_up is not None else self.settings.warm_up):
            return
        started = time.perf_counter()
        touched = weights.warm_up()
        log.info(
            "table %s: warmed up %d MiB in %.2f s",
            source.name,
            touched >> 20,
            time.perf_counter() - started,
        )

    def _backend(
        self, source: TableSource, options: TableOptions, weights: TableWeights, replaces: bool
    ) -> tuple[Placement, GatherBackend]:
        """Where a file table is served and its backend: the one place that makes either.
        ``replaces``: the table replaces the one serving under its name (a reload)."""
        serving = self._serving(source.name) if replaces else None
        placement = choose_placement(
            device=options.device,
            backend=options.backend,
            table_format=weights.format,
            table_bytes=weights.array.nbytes,
            providers=self._providers(),
            free_gpu_bytes=self._free_gpu_bytes,
            source=str(source.path),
            reclaimable_gpu_bytes=(
                held_gpu_bytes(serving.backend.device, serving.placement) if serving else 0
            ),
        )
        backend, placement = build_placed_backend(
            weights,
            placement,
            self._backend_factory,
            str(source.path),
            serving.backend if serving else None,
        )
        return placement, backend

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
            client = await self._clients.client(options.redis, options.redis_timeout_ms)
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
        pad_id, vocabulary = _pad_and_vocabulary(source, options, meta.rows, meta.dtype)
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
            batcher=self._gatherer(source.name, options, backend),
            # Rows outside the hot-row cache are read from Redis (API.md): no text cache.
            row_cache=RowTextCache(0),
            pad_id=pad_id,
            vocabulary=vocabulary,
        )

    def redis_version(self, current: ServedTable, meta: RedisTableMeta) -> ServedTable:
        """Another version of the Redis table ``current`` (a pinned request's), from its meta:
        the same client, options and vocabulary; its own backend, hot-row cache and batcher.
        Synchronous: the meta was read already (``RedisGatherBackend.versions``)."""
        assert isinstance(current.backend, RedisGatherBackend), "a Redis table"
        backend = current.backend.at_version(meta)
        updates = current.updates
        return dataclasses.replace(
            current,
            weights=meta,
            backend=backend,
            # Its own updates (feed, hot-row cache): never the current version's.
            updates=updates.at_version(meta, backend)
            if isinstance(updates, RedisTableUpdates)
            else None,
            batcher=self._gatherer(current.name, current.options, backend),
            row_cache=RowTextCache(0),
            served_version=meta.version,
            _index=None,
            _search_pool=None,
            _searches=0,
            _search_closed=False,
        )

    def _gatherer(self, name: str, options: TableOptions, backend: GatherBackend) -> TableGatherer:
        """A MicroBatcher for a table that batches, else a DirectGatherer."""
        s = self.settings
        config = BatchingConfig(
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
        gatherer = MicroBatcher if config.enabled else DirectGatherer
        return gatherer(backend, config, name)


def _pad_and_vocabulary(
    source: TableSource, options: TableOptions, rows: int, stored_dtype: str
) -> tuple[int | None, Vocabulary | None]:
    """The padding id and the vocabulary of a table of ``rows`` rows, checked together."""
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
