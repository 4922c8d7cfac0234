"""A stand-in for a CUDA onnxruntime session on a host without a GPU (CI has none)."""

from __future__ import annotations

import pytest

from service.backends.base import GatherableRows
from service.backends.ort_gather import OrtGatherBackend
from service.backends.ort_runtime import CudaUnavailable


class FakeCudaOrt(OrtGatherBackend):
    """A CPU onnxruntime session standing in for a CUDA one (it says ``cuda:N``); while
    ``gpu_fails``, building a CUDA session fails as a full GPU would."""

    gpu_fails = False
    cuda_builds = 0

    def __init__(
        self, weights: GatherableRows, device: str = "cpu", gpu_mem_limit: int | None = None
    ) -> None:
        on_cuda = device.startswith("cuda")
        if on_cuda:
            FakeCudaOrt.cuda_builds += 1
            if FakeCudaOrt.gpu_fails:
                raise CudaUnavailable("CUDA failure 2: out of memory (fake)")
        super().__init__(weights, "cpu", gpu_mem_limit)
        if on_cuda:
            self.device, self.max_run_ids = device, 7


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> type[FakeCudaOrt]:
    monkeypatch.setattr(FakeCudaOrt, "gpu_fails", False)
    monkeypatch.setattr(FakeCudaOrt, "cuda_builds", 0)
    return FakeCudaOrt
