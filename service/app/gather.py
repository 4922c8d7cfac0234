"""Steps every vector use case shares: size limits, vocabulary keys, gathering final rows."""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

import numpy as np

from service.decoding.bags_request import BagsRequest
from service.decoding.ids import Position, check_in_range
from service.decoding.requests import SequencesRequest
from service.errors import InvalidRequest
from service.repository.vocabulary import ZERO_ROW
from service.results import Timing
from service.semantics.max_norm import renormalise
from service.tables.served_table import ServedTable

_NOTHING = np.zeros((0, 0), np.float32)  # no rows fetched (every row cached, or zero vectors)


def itemsize(dtype: str) -> int:
    """Bytes per component of an output dtype."""
    return 2 if dtype == "float16" else 4


async def final_rows(table: ServedTable, ids: np.ndarray, dtype: str, timing: Timing) -> np.ndarray:
    """Final rows for 1-D ids: gathered, float32, renormalised when configured."""
    result = await table.batcher.gather(ids)
    timing.queue_seconds += result.queue_seconds
    timing.backend_seconds += result.backend_seconds
    rows = result.rows
    if table.options.max_norm is not None:
        # Our own slice of the batch result (or a fresh cast): safe to rescale in place.
        rows = rows.astype(np.float32, copy=rows.dtype != np.float32 or not rows.flags.writeable)
        renormalise(rows, table.options.max_norm, table.options.norm_type)
    if dtype == "float16":
        return rows.astype(np.float16)
    return rows.astype(np.float32, copy=False)


async def rows_text(
    table: ServedTable,
    ids: np.ndarray,
    shape: tuple[int, ...],
    timing: Timing,
    flat: bool = False,
) -> bytes:
    """JSON text of ``table[ids]`` (-1: zero vector) nested to ``shape``, via the row cache:
    plan, gather the misses once, render."""
    cache = table.row_cache
    plan = cache.plan(ids)
    fetched = _NOTHING
    if plan.fetch_ids.size:
        fetched = await final_rows(table, plan.fetch_ids, "float32", timing)
    return cache.render(plan, fetched, shape, flat)


def key_ids(
    table: ServedTable, keys: list[str], position: Position | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of string keys by the table's vocabulary; a mask of keys given a zero vector."""
    if table.vocabulary is None:
        raise InvalidRequest(f"table {table.name!r} has no vocabulary: send ids")
    ids = table.vocabulary.ids_for(keys, position)
    zero = ids == ZERO_ROW
    if zero.any():
        return np.where(zero, 0, ids), zero
    return ids, None


RaggedRequest = TypeVar("RaggedRequest", BagsRequest, SequencesRequest)


def ragged_ids(
    table: ServedTable, request: RaggedRequest
) -> tuple[RaggedRequest, np.ndarray | None]:
    """``request`` with its keys turned into ids (and the mask of keys given a zero row),
    or with its ids checked against the table's rows."""
    if request.keys is None:
        check_in_range(request.flat_ids, table.rows, request.position)
        return request, None
    flat_ids, zero = key_ids(table, request.keys, request.position)
    return replace(request, flat_ids=flat_ids), zero


def uses_row_text(table: ServedTable, output: str, dtype: str) -> bool:
    """JSON float32 numbers come from the row-text cache when the table has one."""
    return output == "float" and dtype == "float32" and table.row_cache.enabled
