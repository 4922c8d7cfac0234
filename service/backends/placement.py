"""Decides where a table runs: ORT's CUDA provider when asked for or when it fits, else the CPU.

This is the plan, from what the host offers; whether CUDA really loads is known only once a
session exists (``service.backends.placed``, which falls back to ``cpu_fallback``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.backends.ort_runtime import NOT_INSTALLED
from service.errors import TableLoadError

CUDA_PROVIDER = "CUDAExecutionProvider"
# Beyond the table itself: ORT's workspace, the ids and rows of one run, other tenants.
GPU_HEADROOM_BYTES = 512 * 1024 * 1024
GPU_HEADROOM_FRACTION = 0.10
# The most one run may ask of the arena for its ids (8 bytes each) and rows: larger gathers
# are split into runs of this size (ort_gather), so no request the limits admit, however
# they are set, outgrows the arena cap. Half the headroom: the rest is ORT's own.
GPU_RUN_BYTES = GPU_HEADROOM_BYTES // 2
MIB = 1024 * 1024


@dataclass(frozen=True)
class Placement:
    """Which backend on which device, and why (logged and shown in TableInfo)."""

    backend: str  # "numpy" | "onnxruntime"
    device: str  # "cpu" | "cuda:N"
    reason: str
    # The arena cap of a CUDA session: the table, one run's ids and rows, ORT's workspace.
    gpu_mem_limit: int | None = None
    # device = auto placed on CUDA: where the table goes if the provider does not load.
    cpu_fallback: Placement | None = None
    # Fits only with the memory the serving version holds: it must give it up first.
    reclaims: bool = False


def gpu_bytes_needed(table_bytes: int) -> int:
    """Memory a table needs on the GPU, headroom included (the session's arena cap)."""
    return int(table_bytes * (1 + GPU_HEADROOM_FRACTION)) + GPU_HEADROOM_BYTES


def held_gpu_bytes(device: str, placement: Placement) -> int:
    """What a serving table holds on the GPU (its arena cap), given where its backend runs
    now: nothing once it moved to the CPU."""
    return (placement.gpu_mem_limit or 0) if device.startswith("cuda") else 0


def max_run_ids(row_bytes: int) -> int:
    """Most ids one CUDA run gathers: its ids and rows fit ``GPU_RUN_BYTES``."""
    return max(1, GPU_RUN_BYTES // (row_bytes + 8))


def choose_placement(
    *,
    device: str,
    backend: str | None,
    table_format: str,
    table_bytes: int,
    providers: Sequence[str],
    free_gpu_bytes: Callable[[int], int | None],
    source: str,
    reclaimable_gpu_bytes: int = 0,
) -> Placement:
    """Apply the table's ``device``/``backend`` options to what this host offers.

    Explicit requests that cannot be met raise ``TableLoadError`` (the table fails
    to load with the reason); ``auto`` falls back to the CPU and says why.
    ``providers``: onnxruntime's (empty when it is not installed). ``reclaimable_gpu_bytes``:
    what the version being replaced holds on the GPU (a reload frees it).
    """
    has_ort = bool(providers)
    if backend == "onnxruntime" and not has_ort:
        raise TableLoadError(f"{source}: backend = onnxruntime, but {NOT_INSTALLED}")
    ort_or_numpy = "onnxruntime" if has_ort else "numpy"
    cpu_backend = backend or ("numpy" if table_format == "npy" else ort_or_numpy)
    has_cuda = CUDA_PROVIDER in providers
    need = gpu_bytes_needed(table_bytes)

    if device == "cpu":
        return Placement(cpu_backend, "cpu", "device = cpu in the table options")

    if device.startswith("cuda"):
        free = _free(free_gpu_bytes, _device_id(device), reclaimable_gpu_bytes)
        return _explicit_cuda(device, backend, has_cuda, need, free, source)

    # auto
    if backend == "numpy":
        return Placement("numpy", "cpu", "backend = numpy runs on the CPU")
    if not has_ort:
        return Placement(cpu_backend, "cpu", NOT_INSTALLED)
    if not has_cuda:
        return Placement(cpu_backend, "cpu", f"onnxruntime offers no {CUDA_PROVIDER}")
    free = _free(free_gpu_bytes, 0, reclaimable_gpu_bytes)
    if free is None:
        return Placement(cpu_backend, "cpu", "GPU free memory could not be read (NVML)")
    if need > int(free):
        return Placement(
            cpu_backend, "cpu", f"does not fit the GPU: needs {need // MIB} MiB, {_says(free)}"
        )
    fallback = Placement(cpu_backend, "cpu", "")  # its reason: why CUDA did not load
    reason = f"fits the GPU: needs {need // MIB} MiB, {_says(free)}"
    return Placement("onnxruntime", "cuda:0", reason, need, fallback, need > free.now)


def _device_id(device: str) -> int:
    return int(device.partition(":")[2] or 0)


@dataclass(frozen=True)
class _Free:
    """Free GPU memory, counting what the replaced version will release."""

    now: int
    reclaimable: int

    def __int__(self) -> int:
        return self.now + self.reclaimable


def _free(
    free_gpu_bytes: Callable[[int], int | None], device_id: int, reclaimable: int
) -> _Free | None:
    now = free_gpu_bytes(device_id)
    return None if now is None else _Free(now, reclaimable)


def _says(free: _Free) -> str:
    if free.reclaimable:
        return (
            f"{free.now // MIB} MiB free + {free.reclaimable // MIB} MiB the serving "
            "version releases"
        )
    return f"{free.now // MIB} MiB free"


def _explicit_cuda(
    device: str,
    backend: str | None,
    has_cuda: bool,
    need: int,
    free: _Free | None,
    source: str,
) -> Placement:
    """``device = cuda[:N]``: met, or a ``TableLoadError`` saying why not."""
    device_id = _device_id(device)
    if backend == "numpy":
        raise TableLoadError(f"{source}: backend numpy runs on the CPU only, device is {device}")
    if not has_cuda:
        raise TableLoadError(
            f"{source}: device {device} asked for, but onnxruntime offers no "
            f"{CUDA_PROVIDER} (install the 'gpu' extra: onnxruntime-gpu)"
        )
    if free is not None and need > int(free):
        raise TableLoadError(
            f"{source}: needs {need // MIB} MiB on cuda:{device_id}, only {_says(free)}"
        )
    reclaims = free is not None and need > free.now
    return Placement(
        "onnxruntime", f"cuda:{device_id}", f"device = {device}", need, reclaims=reclaims
    )
