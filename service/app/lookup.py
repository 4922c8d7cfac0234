"""``lookup``: ids (or vocabulary keys) of any rank -> their vectors."""

from __future__ import annotations

import time

import numpy as np

from service import metrics
from service.app.gather import final_rows, itemsize, key_ids, rows_text
from service.decoding.ids import check_in_range
from service.decoding.requests import LookupRequest
from service.decoding.shapes import check_output_bytes
from service.results import Timing, Vectors
from service.tables.served_table import ServedTable


async def lookup(
    table: ServedTable, request: LookupRequest, output: str, max_output_bytes: int
) -> Vectors:
    """Vectors of ``request``'s ids; ``output`` is float, base64 or binary."""
    zero = None
    if request.keys is not None:
        flat_ids, zero = key_ids(table, request.keys)
        ids = flat_ids.reshape(request.key_shape)
    else:
        assert request.ids is not None
        ids = request.ids
        check_in_range(ids, table.rows)
    dim = table.dim
    if ids.size * dim * 4 > max_output_bytes:  # float16 is half that: the check is exact
        check_output_bytes(ids.size, dim, itemsize(request.dtype), max_output_bytes)
    shape = (*ids.shape, dim)
    flat = ids.reshape(-1)
    result = Vectors(table.name, shape, request.dtype, output)
    started = time.perf_counter()
    if output == "float" and request.dtype == "float32" and table.row_cache.enabled:
        wanted = flat if zero is None else np.where(zero, -1, flat)
        result.text = await rows_text(table, wanted, shape, result.timing)
    else:
        vectors = await final_rows(table, flat, request.dtype, result.timing)
        if zero is not None:
            vectors = np.where(zero[:, None], 0, vectors).astype(vectors.dtype)
        result.array = vectors.reshape(shape)
    observe_encode(table.name, output, started, result.timing)
    return result


def observe_encode(table: str, fmt: str, started: float, timing: Timing) -> None:
    """Encode time: the span since ``started`` less the time spent queued and gathering."""
    spent = time.perf_counter() - started - timing.queue_seconds - timing.backend_seconds
    metrics.observe_encode(table, fmt, max(spent, 0.0))
