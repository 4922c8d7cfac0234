"""Free GPU memory through NVML (ships with the NVIDIA driver), read without a CUDA context."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)


class _NvmlMemory(ctypes.Structure):
    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


def gpu_free_bytes(device_id: int) -> int | None:
    """Free memory of GPU ``device_id`` in bytes, or ``None`` when NVML is not there."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if nvml.nvmlInit_v2() != 0:
            return None
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(device_id), ctypes.byref(handle)) != 0:
            return None
        memory = _NvmlMemory()
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
            return None
        return int(memory.free)
    except AttributeError:  # an NVML too old to have these symbols
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # pragma: no cover - shutdown failure changes nothing
            log.debug("nvmlShutdown failed", exc_info=True)
