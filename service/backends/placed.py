"""Builds a table's gather backend where its placement says, and returns where it really runs.

A placement is a plan: whether onnxruntime's CUDA provider loads is known only once a session
exists. Under ``device = auto`` a table whose CUDA session came up without the provider goes
to the CPU, its ``placement_reason`` saying why; an explicit ``device = cuda`` fails that
table (named, with the reason) and leaves the others serving.

A reload whose new version fits the GPU only in the room the serving version holds moves the
serving version to the CPU first. If the new version then fails, the serving version goes back
to the GPU; if that fails too it serves on from the CPU, and ``serving_placement`` says so (its
table's ``placement``, read by ``TableInfo.placement_reason``, must be replaced with it).
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
    only in the room that one holds, it moves to the CPU first (and serves on from there); if
    the new one then fails, it moves back (``serving_placement`` says where it ended up).
    Raises ``TableLoadError`` naming ``source`` when the backend cannot be built at all.
    """
    moved = serving if placement.reclaims and isinstance(serving, OrtGatherBackend) else None
    if moved is not None:
        log.info("%s: the serving version moves to the CPU to free the GPU for the new", source)
        moved.move_to_cpu()
    try:
        return _placed(weights, placement, factory, source)
    except BaseException:
        if moved is not None:
            _move_back(moved, source)
        raise


def _placed(
    weights: Weights,
    placement: Placement,
    factory: Callable[[Weights, Placement], GatherBackend],
    source: str,
) -> tuple[GatherBackend, Placement]:
    """The backend for ``placement``, or on the CPU when CUDA does not load under auto."""
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


def _move_back(serving: OrtGatherBackend, source: str) -> None:
    """The new version failed: the serving one back to the GPU it gave up (or, failing that,
    on the CPU, saying why: ``serving_placement``)."""
    try:
        serving.move_back()
    except Exception as exc:
        log.warning(
            "%s: the new version failed and the serving version stays on the CPU: moving it "
            "back to %s failed: %s",
            source,
            serving.moved_from,
            serving.move_back_failure or exc,
        )
    else:
        log.info(
            "%s: the new version failed; the serving version is back on %s", source, serving.device
        )


def restore_serving(backend: GatherBackend, planned: Placement, source: str) -> Placement:
    """After a failed reload, for the version that serves on: back to the GPU a reload moved
    it off (unless that was tried already), and the placement it really has
    (``serving_placement``). Blocking: it may build a CUDA session."""
    if (
        isinstance(backend, OrtGatherBackend)
        and backend.moved_from is not None
        and backend.move_back_failure is None
    ):
        _move_back(backend, source)
    return serving_placement(backend, planned)


def serving_placement(backend: GatherBackend, planned: Placement) -> Placement:
    """Where a serving table's backend really is: ``planned``, unless a reload moved it off
    the GPU and it could not go back; then the CPU, saying so."""
    if (
        not isinstance(backend, OrtGatherBackend)
        or backend.moved_from is None
        or planned.device == backend.device
    ):
        return planned
    failure = backend.move_back_failure
    why = f"moving it back failed: {failure}" if failure else "it was not moved back"
    return Placement(
        backend=planned.backend,
        device=backend.device,
        reason=f"{planned.device} planned ({planned.reason}), but moved to the CPU to make "
        f"room for a new version that failed to load, and {why}",
    )


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
