"""Placement with fake provider lists and fake GPU memory (GPU runs: tests/gpu)."""

from __future__ import annotations

import numpy as np
import pytest

from service.backends.ort_gather import OrtGatherBackend
from service.backends.placement import choose_placement, gpu_bytes_needed
from service.errors import TableLoadError
from service.repository.weights import TableWeights

CPU = ["CPUExecutionProvider"]
GPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]
GiB = 1024**3


def place(
    device="auto", backend=None, fmt="npy", size=GiB, providers=GPU, free=8 * GiB, reclaimable=0
):
    return choose_placement(
        device=device,
        backend=backend,
        table_format=fmt,
        table_bytes=size,
        providers=providers,
        free_gpu_bytes=lambda _: free,
        source="t.npy",
        reclaimable_gpu_bytes=reclaimable,
    )


def test_auto_uses_cuda_when_it_fits() -> None:
    placement = place()
    assert (placement.backend, placement.device) == ("onnxruntime", "cuda:0")
    assert "fits" in placement.reason and placement.gpu_mem_limit == gpu_bytes_needed(GiB)


def test_auto_falls_back_to_cpu_and_says_why() -> None:
    assert place(free=GiB).device == "cpu" and "does not fit" in place(free=GiB).reason
    no_cuda = place(providers=CPU)
    assert (no_cuda.backend, no_cuda.device) == (
        "numpy",
        "cpu",
    ) and "CUDAExecutionProvider" in no_cuda.reason
    assert place(providers=CPU, fmt="onnx").backend == "onnxruntime"
    assert "NVML" in place(free=None).reason
    assert place(backend="numpy").device == "cpu"


def test_explicit_cuda_without_provider_fails_clearly() -> None:
    with pytest.raises(TableLoadError, match="onnxruntime-gpu"):
        place(device="cuda", providers=CPU)
    with pytest.raises(TableLoadError, match="only"):
        place(device="cuda:1", free=GiB)
    with pytest.raises(TableLoadError, match="CPU only"):
        place(device="cuda", backend="numpy")
    assert place(device="cuda:1").device == "cuda:1"
    assert place(device="cpu").device == "cpu"


def _weights(table: np.ndarray) -> TableWeights:
    return TableWeights(table, "npy", __import__("pathlib").Path("t.npy"), "v")


def test_ort_cpu_gather_equals_numpy() -> None:
    table = np.random.default_rng(0).standard_normal((100, 7)).astype(np.float32)
    backend = OrtGatherBackend(_weights(table), "cpu")
    ids = np.array([0, 99, 5, 5], dtype=np.int64)
    np.testing.assert_array_equal(backend.gather(ids), table[ids])
