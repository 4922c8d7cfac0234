"""The CUDA path on a CPU box: what happens when CUDA is listed but does not load, sessions that
never fall back silently, close() that frees at once, CUDA runs split to fit the arena cap, the
NVML device behind a CUDA index (fakes for NVML; the CPU onnxruntime asked for CUDA is real)."""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import numpy as np
import pytest

from service.backends.base import GatherBackend
from service.backends.gpu_memory import free_bytes, nvml_device
from service.backends.numpy_gather import NumpyGatherBackend
from service.backends.ort_gather import OrtGatherBackend, cuda_session_failure
from service.backends.ort_runtime import NOT_INSTALLED, CudaUnavailable
from service.backends.placed import build_placed_backend, restore_serving, serving_placement
from service.backends.placement import (
    GPU_HEADROOM_BYTES,
    GPU_RUN_BYTES,
    Placement,
    gpu_bytes_needed,
    held_gpu_bytes,
    max_run_ids,
)
from service.errors import TableLoadError
from service.repository.npy_loader import load_npy
from service.repository.weights import TableWeights
from tests.unit.backends.conftest import FakeCudaOrt
from tests.unit.backends.test_placement import place

GiB = 1024**3


def _weights(rows: int = 50, dim: int = 4) -> TableWeights:
    table = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    return TableWeights(table, "npy", Path("t.npy"), "v")


def _auto(free: int | None = 8 * GiB, reclaimable: int = 0, fmt: str = "npy") -> Placement:
    placement: Placement = place(free=free, reclaimable=reclaimable, fmt=fmt)
    return placement


def _real_factory(weights: TableWeights, placement: Placement) -> GatherBackend:
    if placement.backend == "numpy":
        return NumpyGatherBackend(weights.array)
    return OrtGatherBackend(weights, placement.device, placement.gpu_mem_limit)


# ------------------------------------------------------------ listed is not loaded (defect 1)
def test_a_cuda_session_without_the_provider_raises_and_says_why() -> None:
    # The CPU onnxruntime here, asked for CUDA, builds a CPU session: a GPU host whose CUDA or
    # cuDNN does not load gets the same from onnxruntime-gpu.
    with pytest.raises(CudaUnavailable, match=r"did not enable CUDAExecutionProvider: .+"):
        OrtGatherBackend(_weights(), "cuda:0", gpu_bytes_needed(800))


def test_the_cuda_probe_session_says_why_it_cannot_gather() -> None:
    # gpu-check and the GPU tests ask this: libraries that load are not yet a CUDA that runs.
    assert "did not enable CUDAExecutionProvider" in cuda_session_failure()


def test_auto_falls_back_to_the_cpu_when_cuda_does_not_load() -> None:
    planned = _auto()
    assert planned.device == "cuda:0" and planned.cpu_fallback is not None
    backend, placement = build_placed_backend(_weights(), planned, _real_factory, "t.npy")
    assert (placement.backend, placement.device) == ("numpy", "cpu")
    assert (backend.name, backend.device) == ("numpy", "cpu")
    assert "cuda:0 planned" in placement.reason and "did not enable" in placement.reason
    onnx_planned = _auto(fmt="onnx")
    backend, placement = build_placed_backend(_weights(), onnx_planned, _real_factory, "t.onnx")
    assert (backend.name, placement.device) == ("onnxruntime", "cpu")
    ids = np.array([3, 0, 49], dtype=np.int64)
    np.testing.assert_array_equal(backend.gather(ids), _weights().array[ids])


def test_explicit_cuda_that_does_not_load_fails_the_table_by_name() -> None:
    planned = place(device="cuda:0", size=800)
    assert planned.cpu_fallback is None
    with pytest.raises(TableLoadError, match=r"^t\.npy: device cuda:0: onnxruntime did not"):
        build_placed_backend(_weights(), planned, _real_factory, "t.npy")


def test_other_backend_failures_name_the_table() -> None:
    def broken(weights: TableWeights, placement: Placement) -> GatherBackend:
        raise ValueError("bad graph")

    with pytest.raises(TableLoadError, match=r"t\.onnx: backend onnxruntime failed: bad graph"):
        build_placed_backend(_weights(), _auto(), broken, "t.onnx")


def test_without_onnxruntime_every_table_is_served_by_numpy() -> None:
    no_ort = place(fmt="onnx", providers=[])
    assert (no_ort.backend, no_ort.reason) == ("numpy", NOT_INSTALLED)
    with pytest.raises(TableLoadError, match="not installed"):
        place(fmt="onnx", backend="onnxruntime", providers=[])


# ------------------------------------------------------------ sessions and memory (4, 5, 8)
def test_sessions_never_fall_back_to_the_cpu_on_their_own() -> None:
    backend = OrtGatherBackend(_weights(), "cpu")
    assert backend._session._enable_fallback is False


def test_close_frees_the_session_at_once() -> None:
    backend = OrtGatherBackend(_weights(), "cpu")
    session = weakref.ref(backend._session)
    gc.disable()  # freed by its reference count, not whenever a collection runs
    try:
        backend.close()
        assert session() is None
    finally:
        gc.enable()
    with pytest.raises(RuntimeError, match="closed"):
        backend.gather(np.array([0], dtype=np.int64))


def test_large_gathers_are_split_into_runs_that_fit_the_arena() -> None:
    weights = _weights(rows=50, dim=4)
    backend = OrtGatherBackend(weights, "cpu")
    assert backend.max_run_ids is None  # the CPU has no arena cap
    backend.max_run_ids = 7  # what a CUDA session of a wide table gets
    runs = []
    run = backend._run

    def counted(*args: object, **kwargs: object) -> object:
        runs.append(1)
        return run(*args, **kwargs)

    backend._run = counted
    ids = np.random.default_rng(1).integers(0, 50, 30)
    np.testing.assert_array_equal(backend.gather(ids), weights.array[ids])
    assert len(runs) == 5


def test_one_run_fits_the_headroom_of_the_arena_cap() -> None:
    for row_bytes in (2, 256, 4096, 1 << 20, GPU_RUN_BYTES * 2):
        ids = max_run_ids(row_bytes)
        assert ids >= 1
        assert ids == 1 or ids * (row_bytes + 8) <= GPU_RUN_BYTES
    assert GPU_RUN_BYTES < GPU_HEADROOM_BYTES  # the rest is ORT's workspace
    assert _auto().gpu_mem_limit == gpu_bytes_needed(GiB) >= GiB + GPU_HEADROOM_BYTES


def test_a_reload_counts_the_memory_of_the_version_it_replaces() -> None:
    need = gpu_bytes_needed(GiB)
    assert _auto(free=need - 1).device == "cpu"
    reload = _auto(free=need - 1, reclaimable=need)
    assert reload.device == "cuda:0" and "the serving version releases" in reload.reason
    assert reload.reclaims and not _auto(free=need, reclaimable=need).reclaims
    assert held_gpu_bytes("cuda:0", reload) == need and held_gpu_bytes("cpu", reload) == 0
    assert place(device="cuda", free=need - 1, reclaimable=need).reclaims


def test_a_serving_version_gives_its_gpu_room_to_the_new_one_and_serves_on() -> None:
    weights = _weights()
    serving = OrtGatherBackend(weights, "cpu")
    serving.device = "cuda:0"  # stands for a CUDA session: it holds the GPU room
    new = _auto(free=gpu_bytes_needed(GiB) - 1, reclaimable=gpu_bytes_needed(GiB))
    ids = np.array([4, 0, 49], dtype=np.int64)
    built, placement = build_placed_backend(weights, new, _numpy_factory, "t.npy", serving)
    assert serving.device == "cpu" and placement is new and built.device == "cuda:0"
    np.testing.assert_array_equal(serving.gather(ids), weights.array[ids])
    untouched = OrtGatherBackend(weights, "cpu")
    untouched.device = "cuda:0"
    build_placed_backend(weights, _auto(), _numpy_factory, "t.npy", untouched)
    assert untouched.device == "cuda:0"  # it fits beside: the old one keeps the GPU


def _numpy_factory(weights: TableWeights, placement: Placement) -> GatherBackend:
    backend = NumpyGatherBackend(weights.array)
    backend.device = placement.device  # type: ignore[misc]
    return backend


def _failing_factory(weights: TableWeights, placement: Placement) -> GatherBackend:
    raise RuntimeError("the new version's session failed (fake)")


def _reclaiming() -> Placement:
    return _auto(free=gpu_bytes_needed(GiB) - 1, reclaimable=gpu_bytes_needed(GiB))


def _on_cuda(fake_cuda: type[FakeCudaOrt]) -> tuple[TableWeights, FakeCudaOrt, Placement]:
    """Weights, a serving backend on cuda:0, and the placement it was built for."""
    weights = _weights()
    return weights, fake_cuda(weights, "cuda:0", gpu_bytes_needed(800)), _auto()


def _new_version_fails(weights: TableWeights, serving: FakeCudaOrt) -> None:
    """A reload that takes the GPU room of ``serving``, whose new backend fails."""
    with pytest.raises(TableLoadError, match="failed \\(fake\\)"):
        build_placed_backend(weights, _reclaiming(), _failing_factory, "t.npy", serving)


def _serves_its_rows(serving: GatherBackend, weights: TableWeights) -> None:
    ids = np.array([4, 0, 49], dtype=np.int64)
    np.testing.assert_array_equal(serving.gather(ids), weights.array[ids])


def test_a_serving_version_moved_for_a_new_one_that_fails_goes_back_to_the_gpu(
    fake_cuda: type[FakeCudaOrt],
) -> None:
    weights, serving, planned = _on_cuda(fake_cuda)
    _new_version_fails(weights, serving)
    assert (serving.device, serving.moved_from, serving.max_run_ids) == ("cuda:0", None, 7)
    assert serving_placement(serving, planned) is planned
    assert restore_serving(serving, planned, "t.npy") is planned
    assert fake_cuda.cuda_builds == 2  # built, then moved back; nothing more
    _serves_its_rows(serving, weights)


def test_a_serving_version_that_cannot_go_back_says_it_serves_from_the_cpu(
    fake_cuda: type[FakeCudaOrt],
) -> None:
    weights, serving, planned = _on_cuda(fake_cuda)
    fake_cuda.gpu_fails = True  # the failed new version, or another tenant, holds the room
    _new_version_fails(weights, serving)
    assert (serving.device, serving.moved_from) == ("cpu", "cuda:0")
    assert "out of memory" in (serving.move_back_failure or "")
    builds = fake_cuda.cuda_builds
    actual = restore_serving(serving, planned, "t.npy")  # tried already: not again
    assert fake_cuda.cuda_builds == builds
    assert (actual.device, actual.backend, actual.gpu_mem_limit) == ("cpu", "onnxruntime", None)
    assert actual.reason.startswith("cuda:0 planned (")
    assert "a new version that failed to load, and moving it back failed: CUDA failure" in (
        actual.reason
    )
    assert serving_placement(serving, actual) is actual  # read again: unchanged
    assert held_gpu_bytes(serving.device, actual) == 0
    _serves_its_rows(serving, weights)


def test_a_reload_failing_after_its_backend_was_built_moves_the_serving_one_back(
    fake_cuda: type[FakeCudaOrt],
) -> None:
    weights, serving, planned = _on_cuda(fake_cuda)
    build_placed_backend(weights, _reclaiming(), _numpy_factory, "t.npy", serving)
    assert serving.device == "cpu"
    # ... and the reload fails later (its updates, its install): the serving one goes back.
    assert restore_serving(serving, planned, "t.npy") is planned
    assert serving.device == "cuda:0"


# ------------------------------------------------------------ NVML device (defect 6)
@pytest.mark.parametrize(
    ("index", "visible", "expected"),
    [
        (0, None, 0),
        (1, None, 1),
        (0, "2,3", 2),
        (1, "2,3", 3),
        (2, "2,3", None),
        (0, "", None),
        (0, "-1", None),
        (1, "1,bogus,3", None),  # CUDA stops at the first invalid entry
        (0, "GPU-8d5e-aa", "GPU-8d5e-aa"),
        (0, "MIG-1b2c-77", "MIG-1b2c-77"),
    ],
)
def test_the_nvml_device_behind_a_cuda_index(
    index: int, visible: str | None, expected: int | str | None
) -> None:
    assert nvml_device(index, visible) == expected


class FakeNvml:
    """Two GPUs: NVML index 0 plain, index 1 split into MIG slices."""

    def handle(self, device: int | str) -> object | None:
        return {0: "gpu0", 1: "gpu1", "GPU-b": "gpu1", "MIG-s": "slice1"}.get(device)

    def mig_enabled(self, handle: object) -> bool:
        return handle == "gpu1"

    def mig_device(self, handle: object, index: int) -> object | None:
        return "slice1" if (handle, index) == ("gpu1", 0) else None

    def free(self, handle: object) -> int | None:
        # A MIG parent reports the whole GPU: reading it would be the bug.
        return {"gpu0": 10 * GiB, "gpu1": 80 * GiB, "slice1": 9 * GiB}.get(str(handle))


def test_free_memory_of_a_mig_gpu_is_its_slice() -> None:
    nvml = FakeNvml()
    assert free_bytes(nvml, 0) == 10 * GiB
    assert free_bytes(nvml, 1) == 9 * GiB
    assert free_bytes(nvml, "GPU-b") == 9 * GiB
    assert free_bytes(nvml, "MIG-s") == 9 * GiB
    assert free_bytes(nvml, 1, mig_index=3) is None
    assert free_bytes(nvml, 7) is None


def test_a_moved_version_serves_its_own_rows_after_its_file_was_replaced(
    tmp_path: Path, fake_cuda: type[FakeCudaOrt]
) -> None:
    # A reload renames the new file over the old name: a session built again from the name
    # would serve the new version's rows under the old version.
    path = tmp_path / "t.npy"
    old = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    np.save(path, old)
    weights = load_npy(path)
    assert weights.file_region is not None
    serving = fake_cuda(weights, "cuda:0", gpu_bytes_needed(800))
    assert serving._own_rows() is weights  # the file is unchanged: mapped, not copied
    replacement = tmp_path / "new.npy"
    np.save(replacement, old + 1)
    os.replace(replacement, path)
    ids = np.array([4, 0, 49], dtype=np.int64)
    serving.move_to_cpu()
    np.testing.assert_array_equal(serving.gather(ids), old[ids])
    serving.move_back()
    assert serving.device == "cuda:0"
    np.testing.assert_array_equal(serving.gather(ids), old[ids])
