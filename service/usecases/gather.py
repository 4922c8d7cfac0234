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
from service.tables.served_table import ServedTable
from service.updates.overlay import OverlayState
from service.usecases.plan import Current, FinalRows, NotInline, Plan

_NOTHING = np.zeros((0, 0), np.float32)  # no rows fetched (every row cached, or zero vectors)


def itemsize(dtype: str) -> int:
    """Bytes per component of an output dtype."""
    return 2 if dtype == "float16" else 4


async def final_rows(table: ServedTable, ids: np.ndarray, dtype: str, timing: Timing) -> np.ndarray:
    """Final rows for 1-D ids: gathered, float32, renormalised when configured."""
    return await FinalRows(table, ids, dtype, timing).run()


SLICE_NUMBERS = 1 << 18
"""JSON answers of more numbers than this are rendered in slices of about this many, with
the event loop free between them: orjson holds the loop (and the GIL) while it writes,
~15 ms per slice here against ~400 ms for 100,000 x 64 at once, so probes and small
requests are answered while a large one is being written."""


class RowText(Plan[bytes]):
    """JSON text of ``table[ids]`` (-1: zero vector; ``ids`` flat) nested to ``shape``, or
    as one flat list, via the row-text cache; a large answer in slices along the first axis
    (awaited only: ``run_inline`` refuses it)."""

    def __init__(
        self,
        table: ServedTable,
        ids: np.ndarray,
        shape: tuple[int, ...],
        timing: Timing,
        flat: bool = False,
    ) -> None:
        self.table, self.ids, self.shape, self.timing, self.flat = table, ids, shape, timing, flat
        self.items = 0  # items of the first axis per slice (0: one render)
        if ids.size * shape[-1] > SLICE_NUMBERS and len(shape) >= 2:
            per_item = math.prod(shape[1:])  # numbers per item of the first axis
            items = max(1, SLICE_NUMBERS // max(1, per_item))
            if shape[0] > items:
                self.items = items

    def run_inline(self) -> bytes:
        if self.items:
            raise NotInline("a large answer is rendered in slices, the event loop free between")
        cache = self.table.row_cache
        plan = cache.plan(self.ids)
        fetched = _NOTHING
        if plan.fetch_ids.size:
            fetched = FinalRows(self.table, plan.fetch_ids, "float32", self.timing).run_inline()
        return cache.render(plan, fetched, self.shape, self.flat)

    async def run(self) -> bytes:
        if not self.items:
            return await self._render(self.ids, self.shape)
        shape, items = self.shape, self.items
        ids_per_item = self.ids.size // shape[0]
        parts: list[memoryview] = []
        # An updated table: every slice at the overlay state of the first, past the cache
        # (updates applied between two slices must not split the answer).
        updates = self.table.updates
        overlay = Current.STATE if updates is None else updates.state
        for start in range(0, shape[0], items):
            if start:
                await asyncio.sleep(0)  # the event loop's turn between two slices
            stop = min(shape[0], start + items)
            part_ids = self.ids[start * ids_per_item : stop * ids_per_item]
            part = await self._render(part_ids, (stop - start, *shape[1:]), overlay)
            parts.append(memoryview(part)[1:-1])  # "[a,b]" -> "a,b" (a view: no copy)
        return b"[" + b",".join(parts) + b"]"

    async def _render(
        self,
        ids: np.ndarray,
        shape: tuple[int, ...],
        overlay: OverlayState | Current | None = Current.STATE,
    ) -> bytes:
        """One render: plan, gather the misses once, render (at a fixed ``overlay``, even
        ``None`` -- the state before a first update -- past the cache)."""
        cache = self.table.row_cache
        plan = cache.plan(ids) if overlay is Current.STATE else cache.bulk_plan(ids)
        fetched = _NOTHING
        if plan.fetch_ids.size:
            rows = FinalRows(self.table, plan.fetch_ids, "float32", self.timing, overlay)
            fetched = await rows.run()
        return cache.render(plan, fetched, shape, self.flat)


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
    """JSON float32 numbers come from the row-text cache when the table has one (every
    use case asks here)."""
    return output == "float" and dtype == "float32" and table.row_cache.enabled
