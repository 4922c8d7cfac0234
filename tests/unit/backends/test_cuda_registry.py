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
import pytest

from service.backends.base import GatherBackend
from service.backends.numpy_gather import NumpyGatherBackend
from service.backends.ort_runtime import NOT_INSTALLED
from service.backends.placement import Placement, gpu_bytes_needed
from service.errors import TableLoadError
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from tests.support.tables import random_table, write_npy
from tests.unit.backends.conftest import FakeCudaOrt

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


def test_a_failed_reload_leaves_the_serving_version_where_it_says(
    tmp_path: Path, fake_cuda: type[FakeCudaOrt]
) -> None:
    """A reload that needs the serving version's GPU room moves it to the CPU; when the new
    version then fails, the old one goes back to the GPU, or TableInfo says it stayed on the
    CPU and why."""
    folder = tmp_path / "models"
    table = random_table(64, 8)
    write_npy(folder, "big", table)
    need = gpu_bytes_needed(table.nbytes)
    free = [8 * GiB]
    fail_new = [False]

    def factory(weights: object, placement: Placement) -> GatherBackend:
        if fail_new[0]:
            raise RuntimeError("the new version's session failed (fake)")
        return FakeCudaOrt(weights, placement.device, placement.gpu_mem_limit)  # type: ignore[arg-type]

    async def reload_failing(registry: TableRegistry, seed: int) -> dict[str, object]:
        os.replace(write_npy(tmp_path, "big", random_table(64, 8, seed=seed)), folder / "big.npy")
        with pytest.raises(TableLoadError, match="failed \\(fake\\)"):
            await registry.reload_local("big")
        return registry.get("big").info()

    async def scenario() -> None:
        registry = _registry(folder, free_gpu_bytes=lambda _: free[0], backend_factory=factory)
        await registry.load()
        try:
            planned = registry.get("big").placement
            assert registry.get("big").info()["device"] == "cuda:0"
            free[0], fail_new[0] = need - 1, True  # the new version fits only in the old's room
            info = await reload_failing(registry, seed=1)
            assert (info["device"], info["placement_reason"]) == ("cuda:0", planned.reason)
            fake_cuda.gpu_fails = True  # and now the way back is full too
            info = await reload_failing(registry, seed=2)
            assert info["device"] == "cpu"
            reason = str(info["placement_reason"])
            assert reason.startswith(f"cuda:0 planned ({planned.reason})"), reason
            assert "moving it back failed: CUDA failure 2: out of memory (fake)" in reason
            assert registry.get("big").placement.device == "cpu"
            ids = np.array([1, 63], dtype=np.int64)
            np.testing.assert_array_equal(registry.get("big").backend.gather(ids), table[ids])
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
