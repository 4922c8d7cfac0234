"""The one small interface every gather backend implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class GatherBackend(Protocol):
    """Returns ``table[ids]`` for validated ids; safe to call from one worker thread."""

    name: str  # "numpy" | "onnxruntime" | "redis"
    device: str  # "cpu" | "cuda:N"
    # True when a call is cheap enough to run on the event loop (no executor hop).
    inline_safe: bool

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """``ids``: 1-D int64, every value already checked to lie in ``[0, rows)``.

        Returns a new ``(len(ids), dim)`` array in the table's dtype.
        """
        ...

    def close(self) -> None:
        """Release what the backend holds (sessions, GPU memory)."""
        ...


class AsyncGatherBackend(GatherBackend, Protocol):
    """A backend whose rows come over the network (Redis): awaited on the event loop.

    The batcher awaits ``gather_async`` instead of running ``gather`` on an executor
    thread; it may raise a ``ServiceError`` (e.g. ``BackendUnavailable``), which reaches
    the batch's requests as it is.
    """

    async def gather_async(self, ids: np.ndarray) -> np.ndarray:
        """Same contract as ``gather``."""
        ...


class GatherableRows(Protocol):
    """What a backend needs of a table's weights (``repository.weights.TableWeights`` is one;
    backends never import the repository: it imports them)."""

    @property
    def rows(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def array(self) -> np.ndarray: ...

    @property
    def file_region(self) -> tuple[Path, int] | None:
        """Where the rows lie byte for byte in a file (path, offset), when they do."""
        ...
