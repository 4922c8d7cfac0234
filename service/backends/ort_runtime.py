"""The installed onnxruntime, if any: its providers, and why its CUDA provider cannot load.

onnxruntime comes with the package's ``cpu`` or ``gpu`` extra. Without either the service
still serves every table, on numpy. ``onnxruntime-gpu`` lists ``CUDAExecutionProvider``
whether or not CUDA and cuDNN load; a session asked for it is created on the CPU when they
do not, so :func:`cuda_load_failure` says why, for the table's ``placement_reason``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

NOT_INSTALLED = (
    "onnxruntime is not installed (pip install 'embedding-service[cpu]', or [gpu] on a CUDA host)"
)


@functools.cache
def onnxruntime_module() -> ModuleType | None:
    """``onnxruntime``, or ``None`` when no build of it is installed."""
    try:
        import onnxruntime  # optional: the cpu or gpu extra
    except ImportError:
        return None
    module: ModuleType = onnxruntime
    return module


def available_providers() -> list[str]:
    """The execution providers onnxruntime offers (listed is not loadable); [] without it."""
    ort = onnxruntime_module()
    return [] if ort is None else list(ort.get_available_providers())


@functools.cache
def preload_cuda_libraries() -> str:
    """Load CUDA and cuDNN once, before the first CUDA session: from the ``nvidia-*`` wheels of
    the ``gpu-libs`` extra if installed, else the system's (the gpu image). Returns what
    onnxruntime reported missing ("" when all loaded, or it has no ``preload_dlls``)."""
    ort = onnxruntime_module()
    if ort is None or not hasattr(ort, "preload_dlls"):
        return ""
    report = io.StringIO()
    with contextlib.redirect_stdout(report):  # preload_dlls prints, it does not raise
        try:
            ort.preload_dlls()
        except Exception as exc:  # a bad directory: the session will say the rest
            print(f"preload_dlls failed: {exc}")
    missing = " ".join(line.strip() for line in report.getvalue().splitlines() if "Failed" in line)
    if missing:
        log.warning("CUDA libraries: %s", missing)
    return missing


@functools.cache
def cuda_load_failure() -> str:
    """Why onnxruntime's CUDA provider library does not load here, from the loader itself
    (e.g. ``libcudart.so.13: cannot open shared object file``); "" when it loads."""
    ort = onnxruntime_module()
    if ort is None:
        return NOT_INSTALLED
    library = Path(str(ort.__file__)).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not library.exists():
        return f"onnxruntime {ort.__version__} has no CUDA provider library ({library.name})"
    preload_cuda_libraries()
    try:
        # The shared provider bridge first: the CUDA library links against it.
        ctypes.CDLL(str(library.with_name("libonnxruntime_providers_shared.so")))
        ctypes.CDLL(str(library))
    except OSError as exc:
        return str(exc).replace(str(library.parent) + "/", "")
    return ""


class CudaUnavailable(RuntimeError):
    """A session asked for the CUDA provider came up without it; the message says why."""
