"""TableRegistry: loads every table of the model repository and hands them out by name.

A table that fails to load is kept aside with its reason (``/readyz``, logs);
the others still serve.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

from service import metrics
from service.backends.base import GatherBackend
from service.backends.gpu_memory import gpu_free_bytes
from service.backends.numpy_gather import NumpyGatherBackend
from service.backends.ort_gather import OrtGatherBackend
from service.backends.placement import Placement, choose_placement
from service.batching.micro_batcher import BatchingConfig, MicroBatcher
from service.encoding.row_text_cache import RowTextCache
from service.errors import TableLoadError, TableNotFound
from service.repository.discovery import TableSource, discover_tables
from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.options import TableOptions, read_table_options
from service.repository.vocabulary import Vocabulary
from service.repository.weights import TableWeights
from service.settings import ServiceSettings
from service.tables.served_table import ServedTable

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

    # ------------------------------------------------------------------ queries
    def get(self, name: str) -> ServedTable:
        """The table called ``name``, or ``TableNotFound``."""
        table = self._tables.get(name)
        if table is None:
            raise TableNotFound(f"no table named {name!r}", {"table": name})
        return table

    def has(self, name: str) -> bool:
        return name in self._tables

    def names(self) -> list[str]:
        return sorted(self._tables)

    def tables(self) -> list[ServedTable]:
        return [self._tables[name] for name in sorted(self._tables)]

    def status(self) -> tuple[str, dict[str, str]]:
        """``ready`` | ``loading`` | ``degraded``, and failed tables (dead batchers included)."""
        failed = dict(self.failures)
        for table in self._tables.values():
            if not table.batcher.healthy:
                failed[table.name] = "batch worker stopped"
        if self.loading:
            return "loading", failed
        return ("degraded" if failed else "ready"), failed

    # ------------------------------------------------------------------ loading
    async def load(self) -> None:
        """Load every table of the repository (file work off the event loop)."""
        folder = Path(self.settings.models)
        sources, problems = await asyncio.to_thread(discover_tables, folder)
        for name, reason in problems.items():
            log.error("table %s not loaded: %s", name, reason)
            self.failures[name] = reason
        for name, source in sources.items():
            try:
                table = await asyncio.to_thread(self._build, source)
            except TableLoadError as exc:
                log.error("table %s not loaded: %s", name, exc)
                self.failures[name] = str(exc)
                continue
            except Exception as exc:  # a loader bug must not take the other tables down
                log.exception("table %s not loaded", name)
                self.failures[name] = f"{source.path}: unexpected error: {exc!r}"
                continue
            table.batcher.start()
            self._tables[name] = table
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
        metrics.TABLES_LOADED.set(len(self._tables))
        metrics.TABLES_FAILED.set(len(self.failures))
        self.loading = False

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
            row_cache=RowTextCache.from_settings(self.settings, source.name),
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

    async def reload(self, name: str, drain_seconds: float = 10.0) -> ServedTable:
        """Load ``name`` again from the repository beside the serving version, then swap.

        The swap is one dict assignment on the event loop: requests that already hold the
        old version finish on it (its batcher is drained, then closed); later ones get the
        new one. If the new version fails to load, the old one keeps serving.
        """
        async with self._reload_lock:
            sources, problems = await asyncio.to_thread(discover_tables, Path(self.settings.models))
            if name not in sources:
                reason = problems.get(name, f"table {name!r} is no longer in the repository")
                raise TableLoadError(reason)
            new = await asyncio.to_thread(self._build, sources[name])
            new.batcher.start()
            old = self._tables.get(name)
            self._tables[name] = new
            self.failures.pop(name, None)
            log.info(
                "table %s reloaded: version %s -> %s",
                name,
                old.weights.version if old else None,
                new.weights.version,
            )
        if old is not None:
            asyncio.get_running_loop().create_task(self._retire(old, drain_seconds))
        return new

    async def reload_all(self) -> None:
        """Reload every table of the repository (SIGHUP); failures keep the old versions."""
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
        """Stop every batcher and release every backend."""
        for table in self._tables.values():
            await table.batcher.close()
            table.close_search()
            table.backend.close()
        self._tables.clear()
