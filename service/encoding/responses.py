"""Builds response bodies: JSON exactly as orjson writes it, base64, raw bytes.

JSON bodies are assembled from fragments so that vectors can come either from
an array (orjson) or from cached row texts, byte-identical either way.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast

import numpy as np
import orjson
from typing_extensions import Buffer

from service.decoding.body import JSON, OCTET_STREAM
from service.results import Document, Neighbors, RawBody, Vectors

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass
class EncodedResponse:
    """A finished response: status, body bytes and headers (lower-case names)."""

    # Binary lookups send the gathered array's own memory (no copy); len() is its byte count.
    body: bytes | memoryview
    media_type: str = JSON
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def as_bytes_view(array: np.ndarray) -> np.ndarray:
    """The array's bytes as a flat uint8 view (no copy; empty arrays too), for ``b"".join``.

    Pass it through ``cast(Buffer, ...)`` there: ndarray exports the buffer protocol, but
    numpy's stubs declare ``__buffer__`` only for Python 3.12 and later.
    """
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def vectors_json(vectors: np.ndarray) -> bytes:
    """orjson's text of an array of vectors (float32 or float16)."""
    return orjson.dumps(vectors, option=_NUMPY)


def vectors_base64(vectors: np.ndarray) -> bytes:
    """A JSON string holding base64 of the row-major little-endian bytes."""
    return b'"' + base64.b64encode(np.ascontiguousarray(vectors).data) + b'"'


@lru_cache(maxsize=4096)
def _envelope_head(table: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    """``{"table":..,"shape":[..],"dtype":"..","vectors":``: written once per table, dtype and
    shape (requests of one workload share a shape)."""
    return b"".join(
        (
            b'{"table":',
            orjson.dumps(table),
            b',"shape":',
            orjson.dumps(shape, option=_NUMPY),
            b',"dtype":',
            orjson.dumps(dtype),
            b',"vectors":',
        )
    )


def json_envelope(
    table: str, shape: Sequence[int], dtype: str, vectors: bytes, **tail: bytes
) -> bytes:
    """``{"table", "shape", "dtype", "vectors", ...tail}`` with pre-encoded vectors/tail values."""
    head = _envelope_head(table, dtype, tuple(shape))
    if not tail:
        return b"".join((head, vectors, b"}"))
    parts = [head, vectors]
    for key, value in tail.items():
        parts += [b',"', key.encode(), b'":', value]
    parts.append(b"}")
    return b"".join(parts)


def binary_lookup(vectors: np.ndarray, dtype: str) -> EncodedResponse:
    """Raw row-major bytes with ``X-Shape`` and ``X-Dtype``.

    The body is a view of ``vectors`` (fresh from the gather, never written again): the
    ``.tobytes()`` copy it replaces cost a tenth of a W3 binary request.
    """
    return EncodedResponse(
        memoryview(cast(Buffer, as_bytes_view(vectors))),
        OCTET_STREAM,
        headers={"x-shape": ",".join(map(str, vectors.shape)), "x-dtype": dtype},
    )


def binary_sequences(
    vectors: np.ndarray, mask: np.ndarray, lengths: np.ndarray, dtype: str
) -> EncodedResponse:
    """Vector bytes then ``B*L`` mask bytes (uint8 0/1), with shape, mask and length headers."""
    # One copy of vectors and mask, straight into the body.
    parts = (as_bytes_view(vectors), as_bytes_view(mask.astype(np.uint8)))
    body = b"".join(cast("tuple[Buffer, Buffer]", parts))  # see as_bytes_view
    return EncodedResponse(
        body,
        OCTET_STREAM,
        headers={
            "x-shape": ",".join(map(str, vectors.shape)),
            "x-dtype": dtype,
            "x-mask-shape": ",".join(map(str, mask.shape)),
            "x-lengths": ",".join(map(str, lengths.tolist())),
        },
    )


def encode_vectors(result: Vectors) -> EncodedResponse:
    """The one path from ``Vectors`` (lookup, sequences, bags) to a body, per output form."""
    if result.output == "binary":
        assert result.array is not None
        if result.mask is not None and result.lengths is not None:
            response = binary_sequences(result.array, result.mask, result.lengths, result.dtype)
        else:
            response = binary_lookup(result.array, result.dtype)
        response.headers.update(result.timing.headers())
        return response
    if result.text is not None:
        text = result.text
    else:
        assert result.array is not None  # Vectors without text carry their array
        if result.output == "base64":
            text = vectors_base64(result.array)
        else:
            text = vectors_json(result.array)
    tail: dict[str, bytes] = {}
    if result.mask is not None and result.lengths is not None:
        tail["mask"] = orjson.dumps(result.mask, option=_NUMPY)
        tail["lengths"] = orjson.dumps(result.lengths.tolist())
    body = json_envelope(result.table, result.shape, result.dtype, text, **tail)
    return EncodedResponse(body, headers=result.timing.headers())


def encode_neighbors(result: Neighbors) -> EncodedResponse:
    """``{"table", "ids", "scores", "keys"?}``."""
    payload: dict[str, object] = {"table": result.table, "ids": result.ids, "scores": result.scores}
    if result.keys is not None:
        payload["keys"] = result.keys
    return EncodedResponse(orjson.dumps(payload, option=_NUMPY))


def encode_document(result: Document) -> EncodedResponse:
    """A small JSON document."""
    return EncodedResponse(orjson.dumps(result.payload, option=_NUMPY), status=result.status)


def encode_raw(result: RawBody) -> EncodedResponse:
    """Bytes already final."""
    return EncodedResponse(result.body, result.media_type, result.status)
