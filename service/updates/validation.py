"""What every row update must be before anything is written: ids and rows checked, rows cast.

The same checks serve file tables and Redis tables, so both refuse the same updates with the
same errors (API.md, "Row updates"): nothing is written when one fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import IdOutOfRange, InvalidIds, InvalidRequest, ServiceError

MAX_UPDATE_ID_CHARS = 128
# Stored dtypes a row update can be written in: int8 tables hold codes and per-row scales
# (a float row would have to be re-quantised), so they refuse updates (409 not_updatable).
UPDATABLE_DTYPES = ("float16", "float32", "float64")


class NotUpdatable(ServiceError):
    """The table's kind cannot take row updates (int8 compact tables)."""

    status = 409
    code = "not_updatable"


@dataclass(frozen=True)
class RowUpdate:
    """A checked update: unique in-range int64 ``ids`` and their ``rows`` in the stored dtype."""

    ids: np.ndarray  # (n,) int64
    rows: np.ndarray  # (n, dim), the table's stored dtype, finite
    update_id: str | None


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the update's sequence, and whether this call applied it."""

    sequence: int
    rows: int
    applied: bool  # False: the update_id was seen before; ``sequence`` is the first one's


def check_update(
    ids: np.ndarray,
    rows: np.ndarray,
    table_rows: int,
    dim: int,
    stored_dtype: str,
    update_id: str | None = None,
) -> RowUpdate:
    """``ids`` and float ``rows`` checked against a ``(table_rows, dim)`` table, rows cast.

    Raises ``InvalidIds`` (not integers, not 1-D, an id twice), ``IdOutOfRange``,
    ``InvalidRequest`` (rows not ``(n, dim)``, NaN/Inf -- also after the cast, as a
    float16 overflow to Inf -- or a bad ``update_id``) and ``NotUpdatable`` (int8 tables).
    """
    if stored_dtype not in UPDATABLE_DTYPES:
        raise NotUpdatable(f"a {stored_dtype} table cannot take row updates", {})
    if update_id is not None and not 0 < len(update_id) <= MAX_UPDATE_ID_CHARS:
        raise InvalidRequest(f"update_id must be 1 to {MAX_UPDATE_ID_CHARS} characters", {})
    checked_ids = _checked_ids(ids, table_rows)
    values = np.asarray(rows)
    if (
        values.ndim != 2
        or values.shape != (checked_ids.size, dim)
        or values.dtype.kind not in "fiu"
    ):
        raise InvalidRequest(
            f"vectors must be ({checked_ids.size}, {dim}) numbers, got {values.shape}",
            {"shape": list(values.shape)},
        )
    with np.errstate(over="ignore", invalid="ignore"):
        stored = np.ascontiguousarray(values, dtype=np.dtype(stored_dtype).newbyteorder("<"))
    if not bool(np.isfinite(values).all() and np.isfinite(stored).all()):
        raise InvalidRequest(
            f"vectors hold NaN or Inf (or values too large for {stored_dtype})", {}
        )
    return RowUpdate(checked_ids, stored, update_id)


def _checked_ids(ids: np.ndarray, table_rows: int) -> np.ndarray:
    """``ids`` as a 1-D int64 array of unique ids in ``[0, table_rows)``."""
    raw = np.asarray(ids)
    if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu"):
        raise InvalidIds("ids must be a flat list of integers", {})
    if raw.size == 0:
        raise InvalidRequest("an update needs at least one row", {})
    if raw.dtype.kind == "u" and int(raw.max()) > np.iinfo(np.int64).max:
        raise IdOutOfRange("ids must be below the table's rows", {"rows": table_rows})
    checked = raw.astype(np.int64)
    bad = (checked < 0) | (checked >= table_rows)
    if bad.any():
        first = int(checked[int(np.argmax(bad))])
        raise IdOutOfRange(
            f"id {first} is out of range for a table of {table_rows} rows",
            {"id": first, "rows": table_rows},
        )
    if np.unique(checked).size != checked.size:
        raise InvalidIds("an id appears twice in one update", {})
    return checked
