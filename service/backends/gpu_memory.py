"""Free GPU memory through NVML (ships with the NVIDIA driver), read without a CUDA context.

CUDA's device N is not NVML's device N: ``CUDA_VISIBLE_DEVICES`` renumbers (by index or by
UUID), and on a MIG-partitioned GPU the parent device reports the whole GPU, not the slice a
process runs on. :func:`nvml_device` maps CUDA's index to what NVML knows; a MIG parent is
read through its MIG device (slice) instead.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Protocol

log = logging.getLogger(__name__)

NVML_SUCCESS = 0
NVML_DEVICE_MIG_ENABLE = 1
UUID_PREFIXES = ("GPU-", "MIG-")


class _NvmlMemory(ctypes.Structure):
    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


def nvml_device(cuda_index: int, visible: str | None) -> int | str | None:
    """The NVML device behind CUDA device ``cuda_index``: an NVML index or a ``GPU-``/``MIG-``
    UUID; ``None`` when ``CUDA_VISIBLE_DEVICES`` (``visible``) hides it.

    Like CUDA, the list ends at its first entry that is neither an index nor a UUID. A numeric
    entry is an NVML (PCI bus) index only under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or with GPUs
    of one model, which is what GPU nodes have (docs/deploy.md).
    """
    if visible is None:
        return cuda_index
    entries: list[int | str] = []
    for entry in (part.strip() for part in visible.split(",")):
        if entry.startswith(UUID_PREFIXES):
            entries.append(entry)
        elif entry.isdigit():
            entries.append(int(entry))
        else:
            break
    return entries[cuda_index] if cuda_index < len(entries) else None


class Nvml(Protocol):
    """The few NVML queries free memory needs; each returns ``None`` where NVML says no."""

    def handle(self, device: int | str) -> object | None: ...

    def mig_enabled(self, handle: object) -> bool: ...

    def mig_device(self, handle: object, index: int) -> object | None: ...

    def free(self, handle: object) -> int | None: ...


def free_bytes(nvml: Nvml, device: int | str, mig_index: int = 0) -> int | None:
    """Free memory of ``device`` (see :func:`nvml_device`); on a MIG parent, that of its
    ``mig_index``-th slice (the one a process given this GPU runs on)."""
    handle = nvml.handle(device)
    if handle is None:
        return None
    if nvml.mig_enabled(handle):
        handle = nvml.mig_device(handle, mig_index)
        if handle is None:
            return None
    return nvml.free(handle)


class _CtypesNvml:
    """:class:`Nvml` over ``libnvidia-ml.so.1``."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib

    def handle(self, device: int | str) -> object | None:
        handle = ctypes.c_void_p()
        if isinstance(device, str):
            status = self._lib.nvmlDeviceGetHandleByUUID(device.encode(), ctypes.byref(handle))
        else:
            status = self._lib.nvmlDeviceGetHandleByIndex_v2(
                ctypes.c_uint(device), ctypes.byref(handle)
            )
        return handle if status == NVML_SUCCESS else None

    def mig_enabled(self, handle: object) -> bool:
        current, pending = ctypes.c_uint(), ctypes.c_uint()
        status = self._lib.nvmlDeviceGetMigMode(
            handle, ctypes.byref(current), ctypes.byref(pending)
        )
        # NOT_SUPPORTED (no MIG on this GPU) or a MIG device's own handle: not a parent.
        return bool(status == NVML_SUCCESS and current.value == NVML_DEVICE_MIG_ENABLE)

    def mig_device(self, handle: object, index: int) -> object | None:
        mig = ctypes.c_void_p()
        status = self._lib.nvmlDeviceGetMigDeviceHandleByIndex(
            handle, ctypes.c_uint(index), ctypes.byref(mig)
        )
        return mig if status == NVML_SUCCESS else None

    def free(self, handle: object) -> int | None:
        memory = _NvmlMemory()
        if self._lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != NVML_SUCCESS:
            return None
        return int(memory.free)


def gpu_free_bytes(device_id: int) -> int | None:
    """Free memory of CUDA device ``device_id`` in bytes, or ``None`` when NVML is not there
    or cannot tell."""
    device = nvml_device(device_id, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if device is None:
        return None
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if lib.nvmlInit_v2() != NVML_SUCCESS:
            return None
        # A MIG UUID names the slice itself; an index or GPU UUID may name a MIG parent.
        return free_bytes(_CtypesNvml(lib), device)
    except AttributeError:  # an NVML too old to have these symbols
        return None
    finally:
        try:
            lib.nvmlShutdown()
        except Exception:  # pragma: no cover - shutdown failure changes nothing
            log.debug("nvmlShutdown failed", exc_info=True)
