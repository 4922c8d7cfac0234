"""OpenAI ``embeddings`` over token-id input: one mean-pooled vector per input.

``dimensions`` keeps the first n components and renormalises to unit L2 norm, as OpenAI's
text-embedding-3 models do (meaningful for Matryoshka-trained tables).
"""

from __future__ import annotations

import numpy as np

from service.decoding.ids import check_in_range, segment_position
from service.decoding.openai_request import EmbeddingsRequest
from service.errors import InvalidRequest
from service.results import Embeddings
from service.semantics.pooling import segment_means
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable
from service.usecases.gather import final_rows


async def embeddings(
    registry: TableRegistry, call: EmbeddingsRequest, table: ServedTable | None = None
) -> Embeddings:
    """Mean of each input's rows (after ``max_norm``), optionally shortened to ``dimensions``.

    ``model`` is ``table`` or ``table@version`` (a version or a label); ``table``: the one
    already resolved from it."""
    if table is None:
        name, _, version = call.model.partition("@")
        table = registry.get(name, version or None)
    check_in_range(call.flat_ids, table.rows, lambda at: segment_position(call.lengths, at))
    if call.dimensions is not None and call.dimensions > table.dim:
        raise InvalidRequest(f"dimensions {call.dimensions} exceeds the table's {table.dim}")
    result = Embeddings(call.model, np.zeros(0), int(call.flat_ids.size), call.encoding_format)
    rows = await final_rows(table, call.flat_ids, "float32", result.timing)
    vectors = segment_means(rows, call.lengths)
    if call.dimensions is not None and call.dimensions < table.dim:
        vectors = vectors[:, : call.dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
    result.vectors = vectors
    return result
