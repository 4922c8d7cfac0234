"""``bags``: pooled multi-hot lookups, as ``nn.EmbeddingBag`` (sum, mean, max) or TF (sqrtn)."""

from __future__ import annotations

import time

import numpy as np

from service.decoding.bags_request import BagsRequest
from service.decoding.shapes import check_output_bytes
from service.errors import InvalidRequest
from service.results import Vectors
from service.semantics.pooling import pool_bags
from service.tables.served_table import ServedTable
from service.usecases.gather import itemsize, ragged_ids
from service.usecases.lookup import observe_encode
from service.usecases.plan import FinalRows, Plan, Ready


def bag_layout(
    request: BagsRequest, pad_id: int | None, zero: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Ids that enter the pool (padding and zero-OOV keys left out, as EmbeddingBag leaves out
    padding), per-bag counts, weights."""
    if pad_id is None and zero is None:
        return request.flat_ids, request.lengths, request.weights
    keep = np.ones(request.flat_ids.size, bool) if pad_id is None else request.flat_ids != pad_id
    if zero is not None:
        keep &= ~zero
    bag_of = np.repeat(np.arange(request.lengths.size), request.lengths)
    counts = np.bincount(bag_of[keep], minlength=request.lengths.size).astype(np.int64)
    weights = request.weights[keep] if request.weights is not None else None
    return request.flat_ids[keep], counts, weights


def bags(
    table: ServedTable, request: BagsRequest, output: str, max_output_bytes: int
) -> Plan[Vectors]:
    """One pooled vector per bag."""
    request, zero = ragged_ids(table, request)
    check_output_bytes(request.lengths.size, table.dim, itemsize(request.dtype), max_output_bytes)
    ids, counts, weights = bag_layout(request, table.pad_id, zero)
    result = Vectors(table.name, (int(request.lengths.size), table.dim), request.dtype, output)
    started = time.perf_counter()

    def pool(rows: np.ndarray) -> Vectors:
        with np.errstate(over="ignore", invalid="ignore"):
            pooled = pool_bags(rows, counts, weights, request.mode)
        if not np.isfinite(pooled).all():
            raise InvalidRequest("weights too large: a pooled vector overflows float32")
        result.array = pooled.astype(np.float16) if request.dtype == "float16" else pooled
        result.shape = tuple(result.array.shape)
        observe_encode(table.name, "bags", started, result.timing)
        return result

    if not ids.size:
        return Ready(np.zeros((0, table.dim), np.float32)).then(pool)
    return FinalRows(table, ids, "float32", result.timing).then(pool)
