"""What the use cases (``service.usecases``) return and the encoders (``service.encoding``) read.

A leaf module: plain data (numpy arrays plus metadata), nothing of HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Timing:
    """Where a request's time went (sent back as X-Queue-Time-Ms / X-Backend-Time-Ms)."""

    queue_seconds: float = 0.0
    backend_seconds: float = 0.0

    def headers(self) -> dict[str, str]:
        """The two timing headers, in milliseconds."""
        queue = self.queue_seconds
        return {
            # Tables that gather inline never queue: no formatting for the common zero.
            "x-queue-time-ms": "%.3f" % (queue * 1000) if queue else "0.000",
            "x-backend-time-ms": "%.3f" % (self.backend_seconds * 1000),
        }


@dataclass(slots=True)
class Vectors:
    """Vectors of a lookup, sequences or bags call, as an array or as ready JSON text.

    ``output`` is ``float`` (JSON numbers), ``base64`` or ``binary``; ``text`` is set only
    for ``float`` answers rendered from the row-text cache. Sequences add ``mask`` and
    ``lengths``.
    """

    table: str
    shape: tuple[int, ...]
    dtype: str
    output: str
    array: np.ndarray | None = None
    text: bytes | None = None
    timing: Timing = field(default_factory=Timing)
    mask: np.ndarray | None = None
    lengths: np.ndarray | None = None


@dataclass
class Neighbors:
    """Nearest rows per query, best first (and their keys for tables with a vocabulary)."""

    table: str
    ids: np.ndarray
    scores: np.ndarray
    keys: list[list[str | None]] | None = None


@dataclass
class Embeddings:
    """OpenAI embeddings: one pooled float32 vector per input."""

    model: str
    vectors: np.ndarray
    tokens: int
    encoding: str
    timing: Timing = field(default_factory=Timing)


@dataclass
class Tensor:
    """One V2 output: an array, or (JSON ``data``) its flat JSON text from the row cache."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    binary: bool
    array: np.ndarray | None = None
    text: bytes | None = None


@dataclass
class Inference:
    """A V2 infer answer."""

    model: str
    version: str
    request_id: str | None
    outputs: list[Tensor]
    timing: Timing = field(default_factory=Timing)


@dataclass
class Document:
    """A small JSON answer (health, table info, metadata) and its status."""

    payload: Any
    status: int = 200


@dataclass
class RawBody:
    """Bytes already in their final form (metrics exposition, docs pages)."""

    body: bytes
    media_type: str
    status: int = 200


@dataclass
class GroupVectors:
    """A group lookup's answer: each member's vectors, all at one group version."""

    group: str
    version: str
    members: list[tuple[str, Vectors]]  # (stem, vectors), in the request's order
