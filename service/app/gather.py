"""Steps every vector use case shares: size limits, vocabulary keys, gathering final rows."""

from __future__ import annotations

import asyncio
import math
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
    batcher = table.batcher
    result = batcher.gather_inline(ids) if batcher.inline else await batcher.gather(ids)
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


SLICE_NUMBERS = 1 << 18
"""JSON answers of more numbers than this are rendered in slices of about this many, with
the event loop free between them: orjson holds the loop (and the GIL) while it writes,
~15 ms per slice here against ~400 ms for 100,000 x 64 at once, so probes and small
requests are answered while a large one is being written."""


async def rows_text(
    table: ServedTable,
    ids: np.ndarray,
    shape: tuple[int, ...],
    timing: Timing,
    flat: bool = False,
) -> bytes:
    """JSON text of ``table[ids]`` (-1: zero vector; ``ids`` flat) nested to ``shape``, or
    as one flat list, via the row cache; large answers in slices along the first axis."""
    per_item = math.prod(shape[1:])  # numbers per item of the first axis
    items = max(1, SLICE_NUMBERS // max(1, per_item))
    if ids.size * shape[-1] <= SLICE_NUMBERS or len(shape) < 2 or shape[0] <= items:
        return await _rows_text(table, ids, shape, timing, flat)
    ids_per_item = ids.size // shape[0]
    parts: list[memoryview] = []
    for start in range(0, shape[0], items):
        # The event loop's turn before each slice, the first too: a caller that runs this
        # without a loop turn (the direct lane) sees the wait before any rendering is done.
        await asyncio.sleep(0)
        stop = min(shape[0], start + items)
        part_ids = ids[start * ids_per_item : stop * ids_per_item]
        part = await _rows_text(table, part_ids, (stop - start, *shape[1:]), timing, flat)
        parts.append(memoryview(part)[1:-1])  # "[a,b]" -> "a,b" (a view: no copy)
    return b"[" + b",".join(parts) + b"]"


async def _rows_text(
    table: ServedTable,
    ids: np.ndarray,
    shape: tuple[int, ...],
    timing: Timing,
    flat: bool,
) -> bytes:
    """One render: plan, gather the misses once, render."""
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
