"""Builds a table's gather backend where its placement says, and returns where it really runs.

A placement is a plan: whether onnxruntime's CUDA provider loads is known only once a session
exists. Under ``device = auto`` a table whose CUDA session came up without the provider goes
to the CPU, its ``placement_reason`` saying why; an explicit ``device = cuda`` fails that
table (named, with the reason) and leaves the others serving.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TypeVar

from service.backends.base import GatherBackend
from service.backends.ort_gather import OrtGatherBackend
from service.backends.ort_runtime import CudaUnavailable
from service.backends.placement import Placement
from service.errors import TableLoadError

log = logging.getLogger(__name__)

Weights = TypeVar("Weights")


def build_placed_backend(
    weights: Weights,
    placement: Placement,
    factory: Callable[[Weights, Placement], GatherBackend],
    source: str,
    serving: GatherBackend | None = None,
) -> tuple[GatherBackend, Placement]:
    """The backend ``factory`` builds for ``placement``, and the placement it really has.

    ``serving``: the backend of the version a reload replaces. When the new one fits the GPU
    only in the room that one holds, it moves to the CPU first (and serves on from there).
    Raises ``TableLoadError`` naming ``source`` when the backend cannot be built at all.
    """
    if placement.reclaims and isinstance(serving, OrtGatherBackend):
        log.info("%s: the serving version moves to the CPU to free the GPU for the new", source)
        serving.move_to_cpu()
    try:
        return _built(weights, placement, factory, source), placement
    except CudaUnavailable as exc:
        if placement.cpu_fallback is None:  # device = cuda was asked for: not met
            raise TableLoadError(f"{source}: device {placement.device}: {exc}") from None
        cpu = dataclasses.replace(
            placement.cpu_fallback,
            reason=f"{placement.device} planned ({placement.reason}), but {exc}",
        )
        log.warning("%s: on the CPU: %s", source, cpu.reason)
        return _built(weights, cpu, factory, source), cpu


def _built(
    weights: Weights,
    placement: Placement,
    factory: Callable[[Weights, Placement], GatherBackend],
    source: str,
) -> GatherBackend:
    try:
        return factory(weights, placement)
    except (TableLoadError, CudaUnavailable):
        raise
    except Exception as exc:
        raise TableLoadError(f"{source}: backend {placement.backend} failed: {exc}") from exc
