"""Answers that carry the version that gave them, and the base64 vectors decoder."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

# The dtypes the service answers in, little-endian on the wire.
WIRE_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def decode_vectors(data: dict[str, Any], dtype: str | None = None) -> np.ndarray:
    """The array of a base64 answer (``vectors``, ``shape`` and optionally ``dtype``)."""
    wire = WIRE_DTYPES[dtype or data.get("dtype") or "float32"]
    raw = base64.b64decode(data["vectors"])
    return np.frombuffer(raw, wire).reshape(data["shape"])


@dataclass(frozen=True)
class Looked:
    """A lookup's vectors and the table version that answered (``X-Table-Version``;
    None only from a server that predates versions)."""

    version: str | None
    vectors: np.ndarray


@dataclass(frozen=True)
class GroupResult:
    """A group lookup: every member's vectors, all read at the one ``version``."""

    group: str
    version: str
    vectors: dict[str, np.ndarray]


def group_result(data: dict[str, Any]) -> GroupResult:
    """The ``GroupResult`` of a group lookup's JSON answer (base64 vectors)."""
    return GroupResult(
        group=str(data["group"]),
        version=str(data["version"]),
        vectors={member: decode_vectors(body) for member, body in data["tables"].items()},
    )
