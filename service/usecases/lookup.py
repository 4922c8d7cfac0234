"""``lookup``: ids (or vocabulary keys) of any rank -> their vectors."""

from __future__ import annotations

import time

import numpy as np

from service import metrics
from service.decoding.ids import check_in_range
from service.decoding.requests import LookupRequest
from service.decoding.shapes import check_output_bytes
from service.results import Timing, Vectors
from service.tables.served_table import ServedTable
from service.usecases.gather import RowText, itemsize, key_ids, uses_row_text
from service.usecases.plan import FinalRows, Plan


def lookup(
    table: ServedTable, request: LookupRequest, output: str, max_output_bytes: int
) -> Plan[Vectors]:
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

    if uses_row_text(table, output, request.dtype):

        def text_done(text: bytes) -> Vectors:
            result.text = text
            observe_encode(table.name, output, started, result.timing)
            return result

        wanted = flat if zero is None else np.where(zero, -1, flat)
        return RowText(table, wanted, shape, result.timing).then(text_done)

    def rows_done(vectors: np.ndarray) -> Vectors:
        if zero is not None:
            vectors = np.where(zero[:, None], 0, vectors).astype(vectors.dtype)
        result.array = vectors.reshape(shape)
        observe_encode(table.name, output, started, result.timing)
        return result

    return FinalRows(table, flat, request.dtype, result.timing).then(rows_done)


def observe_encode(table: str, fmt: str, started: float, timing: Timing) -> None:
    """Encode time: the span since ``started`` less the time spent queued and gathering."""
    spent = time.perf_counter() - started - timing.queue_seconds - timing.backend_seconds
    metrics.observe_encode(table, fmt, max(spent, 0.0))
