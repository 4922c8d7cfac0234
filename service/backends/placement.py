"""Decides where a table runs: ORT's CUDA provider when asked for or when it fits, else the CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.errors import TableLoadError

CUDA_PROVIDER = "CUDAExecutionProvider"
# Beyond the table itself: ORT's workspace, output buffers of large batches, other tenants.
GPU_HEADROOM_BYTES = 512 * 1024 * 1024
GPU_HEADROOM_FRACTION = 0.10


@dataclass(frozen=True)
class Placement:
    """Which backend on which device, and why (logged and shown in TableInfo)."""

    backend: str  # "numpy" | "onnxruntime"
    device: str  # "cpu" | "cuda:N"
    reason: str
    gpu_mem_limit: int | None = None


def gpu_bytes_needed(table_bytes: int) -> int:
    """Memory a table needs on the GPU, headroom included."""
    return int(table_bytes * (1 + GPU_HEADROOM_FRACTION)) + GPU_HEADROOM_BYTES


def choose_placement(
    *,
    device: str,
    backend: str | None,
    table_format: str,
    table_bytes: int,
    providers: Sequence[str],
    free_gpu_bytes: Callable[[int], int | None],
    source: str,
) -> Placement:
    """Apply the table's ``device``/``backend`` options to what this host offers.

    Explicit requests that cannot be met raise ``TableLoadError`` (the table fails
    to load with the reason); ``auto`` falls back to the CPU and says why.
    """
    cpu_backend = backend or ("numpy" if table_format == "npy" else "onnxruntime")
    has_cuda = CUDA_PROVIDER in providers
    need = gpu_bytes_needed(table_bytes)
    mib = 1024 * 1024

    if device == "cpu":
        return Placement(cpu_backend, "cpu", "device = cpu in the table options")

    if device.startswith("cuda"):
        return _explicit_cuda(device, backend, has_cuda, need, free_gpu_bytes, source)

    # auto
    if backend == "numpy":
        return Placement("numpy", "cpu", "backend = numpy runs on the CPU")
    if not has_cuda:
        return Placement(cpu_backend, "cpu", f"onnxruntime offers no {CUDA_PROVIDER}")
    free = free_gpu_bytes(0)
    if free is None:
        return Placement(cpu_backend, "cpu", "GPU free memory could not be read (NVML)")
    if need > free:
        return Placement(
            cpu_backend,
            "cpu",
            f"does not fit the GPU: needs {need // mib} MiB, {free // mib} MiB free",
        )
    return Placement(
        "onnxruntime",
        "cuda:0",
        f"fits the GPU: needs {need // mib} MiB, {free // mib} MiB free",
        need,
    )


def _explicit_cuda(
    device: str,
    backend: str | None,
    has_cuda: bool,
    need: int,
    free_gpu_bytes: Callable[[int], int | None],
    source: str,
) -> Placement:
    """``device = cuda[:N]``: met, or a ``TableLoadError`` saying why not."""
    mib = 1024 * 1024
    device_id = int(device.partition(":")[2] or 0)
    if backend == "numpy":
        raise TableLoadError(f"{source}: backend numpy runs on the CPU only, device is {device}")
    if not has_cuda:
        raise TableLoadError(
            f"{source}: device {device} asked for, but onnxruntime offers no "
            f"{CUDA_PROVIDER} (install the 'gpu' extra: onnxruntime-gpu)"
        )
    free = free_gpu_bytes(device_id)
    if free is not None and need > free:
        raise TableLoadError(
            f"{source}: needs {need // mib} MiB on cuda:{device_id}, only {free // mib} MiB free"
        )
    return Placement("onnxruntime", f"cuda:{device_id}", f"device = {device}", need)
