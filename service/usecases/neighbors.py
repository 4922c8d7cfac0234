"""``neighbors``: exact nearest rows by cosine, dot product or L2, best first."""

from __future__ import annotations

from functools import partial

import numpy as np

from service.decoding.ids import check_in_range
from service.decoding.neighbors_request import NeighborsRequest
from service.errors import InvalidRequest, UnknownKey
from service.repository.weights import TableWeights
from service.results import Neighbors
from service.tables.served_table import ServedTable
from service.updates.overlay import OverlayState, apply_state, rows_updated_between
from service.usecases.gather import key_ids


def _queries(
    table: ServedTable,
    weights: TableWeights,
    request: NeighborsRequest,
    state: OverlayState | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Query vectors, and the query ids to leave out of their own answers (exclude_self)."""
    query_ids = request.ids
    if request.keys is not None:
        query_ids, zero = key_ids(table, request.keys)
        if zero is not None:
            at = int(np.argmax(zero))
            raise UnknownKey(
                f"key {request.keys[at]!r} is not in the vocabulary", {"key": request.keys[at]}
            )
    if query_ids is not None:
        check_in_range(query_ids, table.rows)
        found = weights.take(query_ids)
        if state is not None:  # updated rows
            found = np.array(found, np.float32, order="C")
            apply_state(state, query_ids, found)
        return found, query_ids if request.exclude_self else None
    queries = request.vectors
    assert queries is not None
    if queries.shape[1] != table.dim:
        raise InvalidRequest(
            f"query vectors have {queries.shape[1]} components; the table's dim is {table.dim}"
        )
    return queries, None


async def neighbors(table: ServedTable, request: NeighborsRequest) -> Neighbors:
    """The ``k`` nearest rows of each query."""
    weights = table.local_weights("neighbors")  # Redis tables: a clear 422, no full scan
    # One overlay state for the queries and every candidate: the answer sees an update whole.
    state = None if table.updates is None else table.updates.state
    queries, exclude = _queries(table, weights, request, state)
    updated = None if state is None else partial(rows_updated_between, state, dim=table.dim)
    try:
        ids, scores = await table.search(queries, request.k, request.metric, exclude, updated)
    except FloatingPointError:
        raise InvalidRequest("query vectors too large: their scores overflow float32") from None
    keys = table.vocabulary.keys_of(ids) if table.vocabulary is not None else None
    return Neighbors(table.name, ids, scores, keys)
