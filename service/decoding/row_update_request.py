"""The body of ``POST /v1/admin/tables/{table}/rows``: the ids and rows of one update.

JSON ``{"ids": [...], "vectors": [[...], ...] | "<base64 of little-endian float32>",
"update_id": "..."}``, or binary: ``X-Rows: n`` and ``n`` little-endian int64 ids followed by
``n x dim`` little-endian float32 values. The table's shape is not known here: the rows come
out ``(n, k)`` and the use case checks them against the table (``updates.validation``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.decoding.body import OCTET_STREAM, json_object
from service.decoding.ids import body_may_hold_booleans, ids_array
from service.decoding.shapes import check_id_count, header_integers
from service.errors import InvalidBody, InvalidIds, InvalidRequest

ROW_UPDATE_FIELDS = frozenset({"ids", "vectors", "update_id"})
_ID_BYTES = 8
_VALUE_BYTES = 4


@dataclass(frozen=True)
class RowUpdateRequest:
    """One update as sent: ``ids`` (1-D int64), ``vectors`` (``(n, k)`` floats), its id."""

    ids: np.ndarray
    vectors: np.ndarray
    update_id: str | None = None

    @property
    def size(self) -> int:
        """Ids in the update (what the ids-in-flight budget counts)."""
        return int(self.ids.size)


def decode_row_update(
    body: bytes, media_type: str, headers: Mapping[str, str], max_ids: int
) -> RowUpdateRequest:
    """Decode an update body, JSON or binary; more rows than ``max_ids`` is ``413``."""
    if media_type == OCTET_STREAM:
        return _binary_update(body, headers.get("x-rows"), max_ids)
    fields = json_object(body, ROW_UPDATE_FIELDS, ("ids", "vectors"))
    raw_ids = fields["ids"]
    if type(raw_ids) is not list:
        raise InvalidIds("ids must be a flat list of integers", {"field": "ids"})
    check_id_count(len(raw_ids), max_ids)
    ids = ids_array(raw_ids, check_booleans=body_may_hold_booleans(body))
    if ids.ndim != 1:
        raise InvalidIds("ids must be a flat list of integers", {"field": "ids"})
    update_id = fields.get("update_id")
    if update_id is not None and type(update_id) is not str:
        raise InvalidRequest("update_id must be a string", {"field": "update_id"})
    return RowUpdateRequest(ids, _json_vectors(fields["vectors"], ids.size), update_id)


def _json_vectors(value: Any, rows: int) -> np.ndarray:
    """``vectors`` as an ``(n, k)`` float array: nested lists of numbers, or base64 float32."""
    if type(value) is str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("vectors is not valid base64", {"field": "vectors"}) from None
        return _rows_of(raw, rows)
    if type(value) is not list or any(type(row) is not list for row in value):
        raise InvalidRequest(
            "vectors must be a list of rows of numbers, or base64", {"field": "vectors"}
        )
    if any(type(x) is bool for row in value for x in row):
        raise InvalidRequest("vectors must hold numbers, not booleans", {"field": "vectors"})
    try:
        vectors = np.array(value, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest(
            "vectors must be a rectangle of numbers, one row per id", {"field": "vectors"}
        ) from None
    if vectors.ndim != 2:
        raise InvalidRequest(
            "vectors must be a list of rows of numbers, one per id",
            {"field": "vectors", "shape": list(vectors.shape)},
        )
    return vectors


def _rows_of(raw: bytes, rows: int) -> np.ndarray:
    """Little-endian float32 ``raw`` as ``rows`` rows (422 when it does not split evenly)."""
    if rows == 0 or len(raw) % (_VALUE_BYTES * rows):
        raise InvalidRequest(
            f"{len(raw)} bytes of vectors do not make {rows} float32 rows",
            {"field": "vectors", "bytes": len(raw)},
        )
    return np.frombuffer(raw, "<f4").reshape(rows, -1)


def _binary_update(body: bytes, rows_header: str | None, max_ids: int) -> RowUpdateRequest:
    """``X-Rows: n``; ``n`` int64 ids then the float32 rows."""
    if rows_header is None:
        raise InvalidRequest("a binary update needs the X-Rows header", {"header": "X-Rows"})
    values = header_integers(rows_header, "X-Rows")
    if len(values) != 1 or values[0] < 1:
        raise InvalidRequest("X-Rows must be one positive integer", {"header": "X-Rows"})
    count = values[0]
    check_id_count(count, max_ids)
    id_bytes = count * _ID_BYTES
    rest = len(body) - id_bytes
    if rest <= 0 or rest % (_VALUE_BYTES * count):
        raise InvalidBody(
            f"a body of {len(body)} bytes is not {count} int64 ids and {count} float32 rows",
            {"bytes": len(body), "rows": count},
        )
    ids = np.frombuffer(body, "<i8", count).astype(np.int64)
    vectors = np.frombuffer(body, "<f4", offset=id_bytes).reshape(count, -1)
    return RowUpdateRequest(ids, vectors)
