"""One onnxruntime build per install, and the gpu image's CUDA major agreeing with the
onnxruntime-gpu range the ``gpu`` extra allows (pyproject.toml, Dockerfile)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# The CUDA major of onnxruntime-gpu's default PyPI wheels, from the first release built for it.
CUDA_MAJOR_FROM = {12: (1, 19), 13: (1, 27)}
# onnxruntime #28107 (CUDA Gather int32 overflow on tables over 2**31 elements: an illegal
# memory access), fixed by #28108, merged to main 2026-04-17; the 1.25 patch releases did not
# take it (1.25.2's cherry-picks, #28338). 1.27 is the first release sure to have branched later.
GATHER_OVERFLOW_FIXED = (1, 27)


def _project() -> dict:
    project: dict = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _floor(requirement: str) -> tuple[int, int]:
    found = re.search(r">=\s*(\d+)\.(\d+)", requirement)
    assert found, requirement
    return int(found[1]), int(found[2])


def _onnxruntimes(requirements: list[str]) -> list[str]:
    return [r for r in requirements if r.startswith("onnxruntime")]


def test_each_install_gets_one_onnxruntime_build() -> None:
    project = _project()
    extras = project["optional-dependencies"]
    assert _onnxruntimes(project["dependencies"]) == []  # else .[gpu] installs both
    assert [r.split(">")[0] for r in _onnxruntimes(extras["cpu"])] == ["onnxruntime"]
    assert [r.split(">")[0] for r in _onnxruntimes(extras["gpu"])] == ["onnxruntime-gpu"]
    assert _onnxruntimes(extras["gpu-libs"])[0].startswith("onnxruntime-gpu[cuda,cudnn]")
    for name, requirements in extras.items():
        if name not in ("cpu", "gpu", "gpu-libs"):
            assert _onnxruntimes(requirements) == [], name  # test, reference...: neither


def test_gpu_image_cuda_major_matches_the_gpu_extra() -> None:
    image = re.search(r"ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.", (ROOT / "Dockerfile").read_text())
    assert image, "Dockerfile: ARG CUDA_IMAGE=nvidia/cuda:<major>..."
    major = int(image[1])
    extras = _project()["optional-dependencies"]
    floors = {_floor(r) for r in extras["gpu"] + extras["gpu-libs"] if "onnxruntime" in r}
    assert len(floors) == 1, floors  # gpu and gpu-libs allow the same releases
    floor = floors.pop()
    newer = [m for m in CUDA_MAJOR_FROM if m > major]
    assert floor >= CUDA_MAJOR_FROM[major], (
        f"onnxruntime-gpu {floor} may be built for CUDA < {major}"
    )
    assert all(floor < CUDA_MAJOR_FROM[m] for m in newer)
    assert floor >= GATHER_OVERFLOW_FIXED
