"""On a GPU (``python3 dev.py gpu-check`` runs these): the CUDA provider really loads, tables are
placed on it, gathers equal numpy's for every dtype and file kind, large gathers split exactly,
close() gives the memory back. Skipped, saying why, wherever CUDA does not load."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from service.backends.base import GatherBackend
from service.backends.gpu_memory import gpu_free_bytes
from service.backends.ort_gather import OrtGatherBackend, cuda_session_failure
from service.backends.ort_runtime import available_providers, cuda_load_failure
from service.backends.placement import Placement, gpu_bytes_needed
from service.errors import TableLoadError
from service.repository.demo import gather_onnx_model
from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.weights import TableWeights
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable
from service.tables.table_builder import default_backend_factory
from tests.support.tables import random_table, write_npy


def cuda_missing() -> str:
    """Why these tests cannot run here ("" when they can)."""
    if "CUDAExecutionProvider" not in available_providers():
        return "onnxruntime offers no CUDAExecutionProvider (install the gpu extra)"
    failure = cuda_load_failure()
    if failure:
        return f"the CUDA provider does not load: {failure}"
    if gpu_free_bytes(0) is None:
        return "NVML cannot read GPU 0 (no NVIDIA driver?)"
    failure = cuda_session_failure()
    return f"a CUDA session does not run: {failure}" if failure else ""


MISSING = cuda_missing()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(MISSING), reason=MISSING)]


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_cuda_gather_equals_numpy(tmp_path: Path, dtype: str) -> None:
    table = random_table(1000, 64, 0, dtype)
    weights = load_npy(write_npy(tmp_path, "t", table))
    backend = OrtGatherBackend(weights, "cuda:0", gpu_bytes_needed(table.nbytes))
    ids = np.random.default_rng(1).integers(0, 1000, 4096)
    ids[:2] = [0, 999]
    np.testing.assert_array_equal(backend.gather(ids), table[ids])


def test_external_data_table_on_cuda(tmp_path: Path) -> None:
    table = random_table(4096, 32, 2)
    model = onnx.load_from_string(gather_onnx_model(table))
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.data")
    weights = load_onnx(tmp_path / "ext.onnx")
    assert weights.file_region is not None
    backend = OrtGatherBackend(weights, "cuda:0", gpu_bytes_needed(table.nbytes))
    ids = np.random.default_rng(3).integers(0, 4096, 10_000)
    np.testing.assert_array_equal(backend.gather(ids), table[ids])


def test_a_gather_split_into_runs_is_exact(tmp_path: Path) -> None:
    table = random_table(500, 16, 4)
    backend = OrtGatherBackend(load_npy(write_npy(tmp_path, "t", table)), "cuda:0", None)
    assert backend.max_run_ids is not None
    backend.max_run_ids = 333
    ids = np.random.default_rng(5).integers(0, 500, 2000)
    np.testing.assert_array_equal(backend.gather(ids), table[ids])


def test_close_gives_the_gpu_memory_back(tmp_path: Path) -> None:
    table = random_table(1 << 20, 64, 6)  # 256 MiB
    weights = load_npy(write_npy(tmp_path, "t", table))
    before = gpu_free_bytes(0)
    backend = OrtGatherBackend(weights, "cuda:0", gpu_bytes_needed(table.nbytes))
    backend.gather(np.arange(10, dtype=np.int64))
    held = gpu_free_bytes(0)
    assert before is not None and held is not None and before - held >= table.nbytes // 2
    gc.disable()  # freed by close() itself, not by a later collection
    try:
        backend.close()
        deadline = time.monotonic() + 10
        while (gpu_free_bytes(0) or 0) < held + table.nbytes // 2:
            assert time.monotonic() < deadline, "close() did not free the GPU memory"
            time.sleep(0.05)
    finally:
        gc.enable()


def test_auto_places_a_fitting_table_on_the_gpu(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_npy(folder, "words", random_table(1000, 16, 7))

    async def scenario() -> None:
        registry = TableRegistry(ServiceSettings(models=folder, run_dir=tmp_path / "run"))
        await registry.load()
        try:
            served = registry.get("words")
            assert served.backend.device == "cuda:0", served.placement.reason
            assert served.placement.reason.startswith("fits the GPU")
        finally:
            await registry.close()

    asyncio.run(scenario())


async def _on_the_gpu_then_replaced(
    tmp_path: Path, table: np.ndarray, free: list[int], factory: Any = default_backend_factory
) -> tuple[TableRegistry, ServedTable]:
    """A registry serving ``models/big.npy`` (``table``) on cuda:0, then the GPU without room
    for a second version and a new file renamed over the old (it keeps its mapping)."""
    settings = ServiceSettings(models=tmp_path / "models", run_dir=tmp_path / "run")
    registry = TableRegistry(settings, free_gpu_bytes=lambda _: free[0], backend_factory=factory)
    await registry.load()
    old = registry.get("big")
    assert old.backend.device == "cuda:0", old.placement.reason
    free[0] = gpu_bytes_needed(table.nbytes) - 1
    replacement = write_npy(tmp_path, "big", table[::-1].copy())
    os.replace(replacement, tmp_path / "models" / "big.npy")
    return registry, old


def test_a_reload_that_needs_the_old_versions_room_stays_on_the_gpu(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    table = random_table(1 << 18, 64, 8)  # 64 MiB
    write_npy(folder, "big", table)
    free = [8 << 30]  # NVML as the placement sees it: room for one version, then not two

    async def scenario() -> None:
        registry, old = await _on_the_gpu_then_replaced(tmp_path, table, free)
        try:
            new = await registry.reload_local("big")
            assert new.backend.device == "cuda:0", new.placement.reason
            assert old.backend.device == "cpu"  # gave its room, served from the CPU meanwhile
            ids = np.arange(0, 1 << 18, 997)
            np.testing.assert_array_equal(new.backend.gather(ids), table[::-1][ids])
            # The old version's CPU session holds its own rows, not the replacing file's.
            np.testing.assert_array_equal(old.backend.gather(ids), table[ids])
        finally:
            await registry.close()

    asyncio.run(scenario())


def test_a_reload_whose_new_version_fails_puts_the_old_one_back_on_the_gpu(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "models"
    table = random_table(1 << 18, 64, 9)  # 64 MiB
    write_npy(folder, "big", table)
    free = [8 << 30]
    builds: list[str] = []

    def factory(weights: TableWeights, placement: Placement) -> GatherBackend:
        builds.append(placement.device)
        if len(builds) > 1:
            raise RuntimeError("the new version's session failed (on purpose)")
        return default_backend_factory(weights, placement)

    async def scenario() -> None:
        registry, old = await _on_the_gpu_then_replaced(tmp_path, table, free, factory)
        try:
            with pytest.raises(TableLoadError, match="on purpose"):
                await registry.reload_local("big")
            served = registry.get("big")
            assert served is old and served.info()["device"] == "cuda:0"
            assert served.placement.reason.startswith("fits the GPU")
            ids = np.arange(0, 1 << 18, 997)  # its own rows, not the replacing file's
            np.testing.assert_array_equal(served.backend.gather(ids), table[ids])
        finally:
            await registry.close()

    asyncio.run(scenario())
