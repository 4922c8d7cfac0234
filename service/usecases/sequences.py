"""``sequences``: ragged id sequences -> padded vectors, mask and lengths (Keras masking)."""

from __future__ import annotations

import numpy as np

from service.decoding.requests import SequencesRequest
from service.decoding.shapes import check_output_bytes
from service.results import Vectors
from service.semantics.sequence_layout import output_length, sequence_layout
from service.tables.served_table import ServedTable
from service.usecases.gather import RowText, itemsize, ragged_ids, uses_row_text
from service.usecases.plan import FinalRows, Plan, Ready


def _slot_ids(
    table: ServedTable, request: SequencesRequest, zero: np.ndarray | None, max_output_bytes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output slot the id to gather (-1: a zero vector), the mask, and the lengths."""
    batch = int(request.lengths.size)
    length = output_length(request.lengths, request.max_length)
    check_output_bytes(batch * length, table.dim, itemsize(request.dtype), max_output_bytes)
    layout = sequence_layout(
        request.lengths, request.max_length, request.padding, request.truncating
    )
    kept_ids = request.flat_ids[layout.kept]
    valid = kept_ids != table.pad_id if table.pad_id is not None else np.ones(kept_ids.size, bool)
    if zero is not None:  # oov = "zero": a zero vector, masked like padding
        valid &= ~zero[layout.kept]
    mask = np.zeros(batch * length, dtype=bool)
    mask[layout.slots] = valid
    slot_ids = np.full(batch * length, -1, dtype=np.int64)
    slot_ids[layout.slots[valid]] = kept_ids[valid]
    return slot_ids, mask.reshape(batch, length), layout.lengths


def sequences(
    table: ServedTable, request: SequencesRequest, output: str, max_output_bytes: int
) -> Plan[Vectors]:
    """Padded ``[B, L, dim]`` vectors (zeros where masked), ``[B, L]`` mask and lengths."""
    request, zero = ragged_ids(table, request)
    slot_ids, mask, lengths = _slot_ids(table, request, zero, max_output_bytes)
    shape = (*mask.shape, table.dim)
    result = Vectors(table.name, shape, request.dtype, output, mask=mask, lengths=lengths)

    def text_done(text: bytes) -> Vectors:
        result.text = text
        return result

    if uses_row_text(table, output, request.dtype):
        return RowText(table, slot_ids, shape, result.timing).then(text_done)
    out_dtype = np.float16 if request.dtype == "float16" else np.float32
    vectors = np.zeros((slot_ids.size, table.dim), dtype=out_dtype)
    filled = slot_ids >= 0

    def rows_done(rows: np.ndarray | None) -> Vectors:
        if rows is not None:
            vectors[filled] = rows
        result.array = vectors.reshape(shape)
        return result

    if not filled.any():
        return Ready(rows_done(None))
    return FinalRows(table, slot_ids[filled], request.dtype, result.timing).then(rows_done)
