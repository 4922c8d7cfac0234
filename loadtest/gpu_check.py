#!/usr/bin/env python3
"""``python3 dev.py gpu-check``: everything a GPU host needs checked, in one command.

1. Looks for the NVIDIA driver (NVML) and says plainly when there is no GPU.
2. Installs the package with the ``gpu`` extra (onnxruntime-gpu, the only onnxruntime there)
   into its own virtualenv, ``.venv-gpu``; adds the ``gpu-libs`` extra (CUDA and cuDNN from
   PyPI) when the host has the driver but not those libraries. A separate environment, not
   ``.venv``: dev.py keeps ``.venv`` on the CPU build for ``run``/``test``, and two onnxruntime
   builds in one environment break both.
3. Reports, from inside that environment: whether the CUDA provider loads (or why not), each
   table's placement, exactness against numpy, the gather throughput of 64k ids against the
   host's PCIe copy rate.
4. Runs the GPU-marked tests (tests/gpu, ``-m gpu``).

Exit status 0 only when a GPU was found, the CUDA provider loaded and the tests passed.
``--models DIR`` reports on that model repository instead of the demo tables.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-gpu"
PY = VENV / "bin" / "python"
GATHER_IDS = 64 * 1024
REPEATS = 20


def nvidia_driver() -> str | None:
    """The NVIDIA driver version NVML reports, or None when there is no driver / GPU."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    version = ctypes.create_string_buffer(96)
    count = ctypes.c_uint()
    try:
        if nvml.nvmlSystemGetDriverVersion(version, 96) != 0:
            return None
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0 or count.value == 0:
            return None
        return f"{version.value.decode()} ({count.value} GPU(s))"
    finally:
        nvml.nvmlShutdown()


def _pip(*args: str) -> None:
    subprocess.run([PY, "-m", "pip", "install", "-q", *args], check=True, cwd=ROOT)


def _probe() -> str:
    """Why the CUDA provider does not load inside .venv-gpu ("" when it does)."""
    code = "from service.backends.ort_runtime import cuda_load_failure as f; print(f())"
    out = subprocess.run(
        [PY, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(), check=True
    )
    return out.stdout.strip()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def ensure_gpu_env(driver: str | None) -> None:
    """``.venv-gpu`` with ``.[gpu]`` and pytest; again only when pyproject.toml changed."""
    stamp = (
        VENV
        / f".installed-{hashlib.sha256((ROOT / 'pyproject.toml').read_bytes()).hexdigest()[:16]}"
    )
    if stamp.exists():
        return
    print(f"setting up {VENV.name}: pip install -e '.[gpu]' pytest", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    _pip("-e", f"{ROOT}[gpu]", "pytest>=8,<10")
    if driver is not None and "cannot open shared object" in _probe():
        print("the driver is here, CUDA/cuDNN libraries are not: adding the gpu-libs extra")
        _pip("-e", f"{ROOT}[gpu-libs]")
    stamp.touch()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="model repository to report on")
    parser.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:  # inside .venv-gpu
        return report(args.models)
    driver = nvidia_driver()
    print("=" * 72)
    if driver is None:
        print("NO GPU FOUND: no NVIDIA driver (libnvidia-ml.so.1) or no GPU on this host.")
        print("Going on as far as a CPU host goes: the CUDA wheel, placement, the skips.")
    else:
        print(f"NVIDIA driver {driver}")
    print("=" * 72, flush=True)
    ensure_gpu_env(driver)
    extra = ["--models", str(args.models)] if args.models else []
    reported = subprocess.call([PY, __file__, "--report", *extra], cwd=ROOT, env=_env())
    print("\n--- GPU tests (tests/gpu) ---", flush=True)
    tested = subprocess.call(
        [PY, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=_env(),
    )
    verdict = driver is not None and reported == 0 and tested == 0
    print("\nRESULT:", "GPU path OK" if verdict else "GPU path NOT verified (see above)")
    return 0 if verdict else 1


# ---------------------------------------------------------------- inside .venv-gpu
def report(models: Path | None) -> int:
    """Provider, placements, exactness and throughput; 0 when the CUDA provider loads."""
    from importlib.metadata import distributions

    from service.backends.gpu_memory import gpu_free_bytes
    from service.backends.ort_gather import cuda_session_failure
    from service.backends.ort_runtime import available_providers, cuda_load_failure

    builds = sorted(
        f"{d.metadata['Name']} {d.version}"
        for d in distributions()
        if d.metadata["Name"].lower().startswith("onnxruntime")
    )
    failure = cuda_load_failure() or cuda_session_failure()
    free = gpu_free_bytes(0)
    print(f"onnxruntime installed:   {', '.join(builds) or 'none'}")
    print(f"providers listed:        {', '.join(available_providers())}")
    print(f"CUDA gathers on cuda:0:  {'yes' if not failure else 'NO: ' + failure}")
    print(f"CUDA_VISIBLE_DEVICES:    {os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
    print(f"GPU 0 free (NVML):       {'unreadable' if free is None else f'{free >> 20} MiB'}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = models or Path(scratch) / "models"
        if models is None:
            from service.repository.demo import write_demo_tables

            folder.mkdir()
            write_demo_tables(folder)
        _tables(folder, Path(scratch) / "run")
    return 0 if not failure else 1


def _tables(folder: Path, run_dir: Path) -> None:
    import asyncio

    from service.settings import ServiceSettings
    from service.tables.registry import TableRegistry

    async def load() -> None:
        registry = TableRegistry(ServiceSettings(models=folder, run_dir=run_dir))
        await registry.load()
        try:
            print(f"\n--- tables in {folder} ---")
            for name, reason in registry.failures.items():
                print(f"{name}: FAILED: {reason}")
            for table in registry.tables():
                _table(table)
        finally:
            await registry.close()

    asyncio.run(load())


def _table(table: Any) -> None:
    import numpy as np

    print(f"{table.name}: {table.backend.name} on {table.backend.device}: {table.placement.reason}")
    weights = getattr(table.weights, "array", None)
    if weights is None:
        print("  (rows in Redis: no local check)")
        return
    ids = np.random.default_rng(0).integers(0, table.rows, GATHER_IDS)
    exact = np.array_equal(table.backend.gather(ids), np.asarray(weights)[ids])
    print(f"  exact against numpy ({GATHER_IDS} ids): {'yes' if exact else 'NO'}")
    seconds = _median(lambda: table.backend.gather(ids))
    out_bytes = GATHER_IDS * table.dim * weights.dtype.itemsize
    print(
        f"  gather of {GATHER_IDS} ids: {seconds * 1e3:.2f} ms, {GATHER_IDS / seconds / 1e6:.1f} M ids/s, "
        f"{out_bytes / seconds / 1e9:.2f} GB/s of rows"
    )
    if table.backend.device.startswith("cuda"):
        print(f"  PCIe copy of the same {out_bytes >> 20} MiB: {_copy_rates(out_bytes)}")


def _median(call: Any) -> float:
    call()  # warm-up: first run allocates
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _copy_rates(size: int) -> str:
    """Host->device and device->host copy rates of ``size`` bytes: through onnxruntime's
    OrtValue (pageable host memory, what a gather's rows cross), and torch's pinned copy
    when torch with CUDA is installed."""
    import numpy as np
    import onnxruntime as ort

    host = np.ones(size // 4, np.float32)
    device = ort.OrtValue.ortvalue_from_numpy(host, "cuda", 0)
    h2d = _median(lambda: ort.OrtValue.ortvalue_from_numpy(host, "cuda", 0))
    d2h = _median(device.numpy)
    rates = f"onnxruntime H2D {size / h2d / 1e9:.2f} GB/s, D2H {size / d2h / 1e9:.2f} GB/s"
    try:
        import torch
    except ImportError:
        return rates + " (torch not installed: no pinned-memory figure)"
    if not torch.cuda.is_available():
        return rates
    pinned = torch.ones(size // 4, dtype=torch.float32).pin_memory()
    on_gpu = pinned.to("cuda")
    torch_h2d = _median(lambda: (pinned.to("cuda", non_blocking=False), torch.cuda.synchronize()))
    torch_d2h = _median(lambda: (on_gpu.to("cpu"), torch.cuda.synchronize()))
    return rates + (
        f"; torch pinned H2D {size / torch_h2d / 1e9:.2f} GB/s, D2H {size / torch_d2h / 1e9:.2f} GB/s"
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
