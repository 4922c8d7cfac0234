"""The registry on a host that lists CUDA: tables placed under ``auto`` serve from the CPU when
the provider does not load, an explicit ``device = "cuda"`` fails alone, and a reload of a
table over half the GPU stays on it (fake provider list and NVML; real onnxruntime CPU)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from service.backends.base import GatherBackend
from service.backends.numpy_gather import NumpyGatherBackend
from service.backends.ort_runtime import NOT_INSTALLED
from service.backends.placement import Placement, gpu_bytes_needed
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from tests.support.tables import random_table, write_npy

GPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]
GiB = 1024**3


def _registry(folder: Path, **kwargs: object) -> TableRegistry:
    settings = ServiceSettings(models=folder, run_dir=folder.parent / "run")
    return TableRegistry(settings, providers=lambda: GPU, **kwargs)  # type: ignore[arg-type]


def test_listed_but_not_loadable_cuda_serves_auto_tables_from_the_cpu(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    table = random_table(20, 4)
    write_npy(folder, "auto", table)
    write_npy(folder, "pinned", table, 'device = "cuda"\n')

    async def scenario() -> None:
        registry = _registry(folder, free_gpu_bytes=lambda _: 8 * GiB)
        await registry.load()
        try:
            assert registry.status() == ("degraded", {"pinned": registry.failures["pinned"]})
            assert "device cuda:0: onnxruntime did not enable" in registry.failures["pinned"]
            served = registry.get("auto")
            assert (served.placement.device, served.backend.device) == ("cpu", "cpu")
            assert "cuda:0 planned" in served.placement.reason
            ids = np.array([1, 19], dtype=np.int64)
            np.testing.assert_array_equal(served.backend.gather(ids), table[ids])
        finally:
            await registry.close()

    asyncio.run(scenario())


class OnTheGpu:
    """A stand-in CUDA backend that holds its arena cap of a fake GPU until closed."""

    def __init__(self, gpu: FakeGpu, weights: object, placement: Placement) -> None:
        self.name, self.device, self.inline_safe = "onnxruntime", placement.device, False
        self._gpu, self._bytes = gpu, placement.gpu_mem_limit or 0
        gpu.used += self._bytes
        self._rows = NumpyGatherBackend(weights.array)  # type: ignore[attr-defined]

    def gather(self, ids: np.ndarray) -> np.ndarray:
        return self._rows.gather(ids)

    def close(self) -> None:
        self._gpu.used -= self._bytes
        self._bytes = 0


class FakeGpu:
    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0

    def free(self, _device: int) -> int:
        return self.total - self.used

    def factory(self, weights: object, placement: Placement) -> GatherBackend:
        if placement.device == "cpu":
            return NumpyGatherBackend(weights.array)  # type: ignore[attr-defined]
        return OnTheGpu(self, weights, placement)


def test_a_reload_does_not_demote_a_table_for_room_its_old_version_frees(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    table = random_table(64, 8)
    write_npy(folder, "big", table)
    need = gpu_bytes_needed(table.nbytes)
    gpu = FakeGpu(total=need + need // 2)  # room for one version, not two

    async def scenario() -> None:
        registry = _registry(folder, free_gpu_bytes=gpu.free, backend_factory=gpu.factory)
        await registry.load()
        try:
            assert registry.get("big").placement.device == "cuda:0"
            # A new file, renamed over the old: the serving version keeps its mapping.
            os.replace(write_npy(tmp_path, "big", random_table(64, 8, seed=1)), folder / "big.npy")
            reloaded = await registry.reload_local("big")
            assert reloaded.placement.device == "cuda:0", reloaded.placement.reason
            assert "the serving version releases" in reloaded.placement.reason
        finally:
            await registry.close()

    asyncio.run(scenario())


def test_without_onnxruntime_installed_every_table_serves_on_numpy(tmp_path: Path) -> None:
    # `pip install .` without the cpu or gpu extra: no onnxruntime module at all.
    folder = tmp_path / "models"
    folder.mkdir()
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["onnxruntime"] = None  # import onnxruntime -> ImportError
        from pathlib import Path
        from service.repository.demo import write_demo_tables
        from service.settings import ServiceSettings
        from service.tables.registry import TableRegistry
        folder = Path({str(folder)!r})
        write_demo_tables(folder)
        async def main():
            registry = TableRegistry(ServiceSettings(models=folder, run_dir=folder.parent / "run"))
            await registry.load()
            for table in registry.tables():
                print(table.name, table.backend.name, table.placement.reason)
            print("failed", registry.failures)
            await registry.close()
        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f"demo numpy {NOT_INSTALLED}" in out and f"demo_onnx numpy {NOT_INSTALLED}" in out
    assert "failed {}" in out
