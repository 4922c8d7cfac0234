"""The real onnxruntime-gpu wheel, installed with the package's ``gpu`` extra into a scratch
virtualenv (built once, kept: tests/gpu/scratch_venv.py). On a host without a working CUDA it
is exactly a GPU host with a mismatched CUDA/cuDNN: the wheel lists CUDAExecutionProvider and
cannot load it. A server run from that environment, with a stand-in NVML reporting a free GPU,
must serve every ``auto`` table from the CPU and say why; a ``device = "cuda"`` table fails
alone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.repository.demo import demo_table, write_demo_tables
from tests.gpu import scratch_venv
from tests.support.server_process import free_port
from tests.support.tables import write_npy

pytestmark = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="onnxruntime-gpu wheels with CUDA are for Linux x86-64 (and Windows)",
)

ROOT = Path(__file__).resolve().parents[2]
GiB = 1024**3

# A stand-in for libnvidia-ml.so.1 (a host with a driver): one GPU with 16 GiB free.
STAND_IN_NVML = textwrap.dedent(
    """
    import ctypes

    _real_cdll = ctypes.CDLL


    class _StandInNvml:
        def nvmlInit_v2(self):
            return 0

        def nvmlShutdown(self):
            return 0

        def nvmlDeviceGetHandleByIndex_v2(self, index, handle):
            return 0 if index.value == 0 else 2

        def nvmlDeviceGetMigMode(self, handle, current, pending):
            return 3  # NVML_ERROR_NOT_SUPPORTED: no MIG

        def nvmlDeviceGetMemoryInfo(self, handle, memory):
            memory._obj.total = memory._obj.free = 16 * 1024**3
            return 0


    def CDLL(name, *args, **kwargs):
        if name == "libnvidia-ml.so.1":
            return _StandInNvml()
        return _real_cdll(name, *args, **kwargs)


    ctypes.CDLL = CDLL
    """
)


@pytest.fixture(scope="module")
def gpu_python() -> Path:
    """The scratch environment's interpreter (the first run installs it: a few minutes)."""
    try:
        return scratch_venv.ensure()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"pip install '.[gpu]' into {scratch_venv.location()} failed: {exc}")


def _run(python: Path, code: str) -> str:
    result = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _cuda_loads(python: Path) -> bool:
    code = "from service.backends.ort_runtime import cuda_load_failure as f; print(repr(f()))"
    return _run(python, code).strip() == "''"


def test_the_gpu_extra_installs_one_onnxruntime_the_cuda_build(gpu_python: Path) -> None:
    listed = subprocess.run(
        [gpu_python, "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    builds = [p for p in json.loads(listed.stdout) if p["name"].startswith("onnxruntime")]
    assert [p["name"] for p in builds] == ["onnxruntime-gpu"], builds
    major, minor = (int(part) for part in builds[0]["version"].split(".")[:2])
    assert (major, minor) >= (1, 27)  # CUDA 13 builds, past the Gather int32 overflow
    providers = _run(gpu_python, "import onnxruntime; print(onnxruntime.get_available_providers())")
    assert "CUDAExecutionProvider" in providers and "CPUExecutionProvider" in providers


def test_listed_cuda_that_does_not_load_says_which_library(gpu_python: Path) -> None:
    if _cuda_loads(gpu_python):
        pytest.skip("CUDA loads on this host: the gpu-marked tests cover it")
    out = _run(
        gpu_python,
        textwrap.dedent(
            """
            import numpy as np
            from pathlib import Path
            from service.backends.ort_gather import OrtGatherBackend
            from service.backends.ort_runtime import CudaUnavailable
            from service.repository.weights import TableWeights
            weights = TableWeights(np.ones((4, 2), np.float32), "npy", Path("t.npy"), "v")
            try:
                OrtGatherBackend(weights, "cuda:0", 1 << 30)
            except CudaUnavailable as exc:
                print(exc)
            """
        ),
    )
    assert "did not enable CUDAExecutionProvider" in out
    assert ".so" in out  # the library the loader could not open, by name


@pytest.fixture(scope="module")
def mismatched_host(gpu_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server from the scratch environment: onnxruntime-gpu whose CUDA does not load, an
    NVML reporting a free GPU; the demo tables (auto) and one table pinned to ``cuda``."""
    if _cuda_loads(gpu_python):
        pytest.skip("CUDA loads on this host: not a mismatched host")
    base = tmp_path_factory.mktemp("mismatched")
    models, stand_in = base / "models", base / "stand_in"
    models.mkdir()
    stand_in.mkdir()
    (stand_in / "sitecustomize.py").write_text(STAND_IN_NVML)
    write_demo_tables(models)
    write_npy(models, "pinned", np.ones((8, 4), np.float32), 'device = "cuda"\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
    env["PYTHONPATH"] = f"{stand_in}{os.pathsep}{ROOT}"
    log = (base / "server.log").open("wb")
    command = ["-m", "service", "serve", "--models", str(models), "--port", str(port)]
    server = subprocess.Popen(
        [gpu_python, *command], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_loaded(url, server, base / "server.log")
        yield url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _wait_loaded(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).json().get("status") != "loading":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(log.read_text(errors="replace"))


def test_auto_tables_serve_from_the_cpu_and_say_why(mismatched_host: str) -> None:
    ready = httpx.get(f"{mismatched_host}/readyz", timeout=10)
    body = ready.json()
    # Degraded by the pinned table alone: every auto table serves.
    assert body["status"] == "degraded", body
    assert body["tables"] == ["demo", "demo_onnx"], body
    for name in ("demo", "demo_onnx"):
        info = httpx.get(f"{mismatched_host}/v1/tables/{name}", timeout=10).json()
        assert info["device"] == "cpu", info
        reason = info["placement_reason"]
        assert "cuda:0 planned" in reason and "did not enable CUDAExecutionProvider" in reason
    ids = [[1, 2], [99_999, 0]]
    answer = httpx.post(f"{mismatched_host}/v1/tables/demo_onnx/lookup", json={"ids": ids})
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(
        np.array(answer.json()["vectors"], np.float32), demo_table()[np.array(ids)]
    )


def test_a_table_pinned_to_cuda_fails_alone_and_named(mismatched_host: str) -> None:
    body = httpx.get(f"{mismatched_host}/readyz", timeout=10).json()
    answer = httpx.post(f"{mismatched_host}/v1/tables/pinned/lookup", json={"ids": [1]})
    assert answer.status_code == 503, answer.text
    reason = answer.json()["error"]["detail"]["reason"]
    assert "pinned.npy: device cuda:0: onnxruntime did not enable" in reason, (body, reason)
