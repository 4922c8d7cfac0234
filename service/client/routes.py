"""The client's public methods, declared once for both clients: each builds the ``Call``.

``EmbeddingClient`` sends what these build and returns the answer; ``AsyncEmbeddingClient``
awaits it. Every table method takes ``version``: a number or a label (None: the default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.client import calls
from service.client.calls import Version
from service.client.results import GroupResult, Looked
from service.client.transport import Call, ClientBase
from service.client.updates import update_rows_call

Client = ClientBase[Any, Any]


def tables(client: Client) -> Call[list[dict[str, Any]]]:
    """Every table's ``TableInfo``."""
    return calls.tables_call()


def table(client: Client, table: str, version: Version = None) -> Call[dict[str, Any]]:
    """One table's ``TableInfo`` (``versions``, ``labels``; ``version`` is its default)."""
    return calls.table_call(table, version)


def lookup(
    client: Client, table: str, ids: Any, *, dtype: str = "float32", version: Version = None
) -> Call[np.ndarray]:
    """Vectors of ``ids`` (any rank): shape ``ids.shape + (dim,)``."""
    return calls.lookup_call(table, ids, client.binary, dtype, version)


def lookup_versioned(
    client: Client, table: str, ids: Any, *, dtype: str = "float32", version: Version = None
) -> Call[Looked]:
    """``lookup`` with the version that answered it (what a label or the default named)."""
    return calls.versioned(calls.lookup_call(table, ids, client.binary, dtype, version))


def sequences(
    client: Client,
    table: str,
    sequences: Sequence[Sequence[int]],
    *,
    max_length: int | None = None,
    padding: str = "post",
    truncating: str = "post",
    version: Version = None,
) -> Call[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Padded vectors ``(B, L, dim)``, mask ``(B, L)`` and lengths ``(B,)``."""
    options = (max_length, padding, truncating)
    return calls.sequences_call(table, sequences, options, client.binary, version)


def bags(
    client: Client,
    table: str,
    bags: Sequence[Sequence[int]],
    *,
    weights: Any = None,
    mode: str = "mean",
    version: Version = None,
) -> Call[np.ndarray]:
    """Pooled vectors ``(B, dim)`` of ragged bags (``nn.EmbeddingBag`` semantics)."""
    return calls.bags_call(table, bags, weights, mode, version)


def neighbors(
    client: Client,
    table: str,
    *,
    ids: Any = None,
    keys: Any = None,
    vectors: Any = None,
    k: int = 10,
    metric: str = "cosine",
    exclude_self: bool = True,
    version: Version = None,
) -> Call[tuple[np.ndarray, np.ndarray]]:
    """Nearest rows: ``(ids, scores)`` of shape ``(queries, k)``."""
    query = calls.neighbors_query(ids, keys, vectors)
    return calls.neighbors_call(table, query, (k, metric, exclude_self), version)


def group_lookup(
    client: Client, group: str, tables: Mapping[str, Any], *, version: Version = None
) -> Call[GroupResult]:
    """Several members of ``group`` (member name -> ids) in one request, all at one version."""
    return calls.group_lookup_call(group, tables, version)


def groups(client: Client) -> Call[list[dict[str, Any]]]:
    """Every group's ``GroupInfo``."""
    return calls.groups_call()


def group(client: Client, group: str) -> Call[dict[str, Any]]:
    """One group's ``GroupInfo`` (members, versions, labels, default version)."""
    return calls.group_call(group)


def update_rows(
    client: Client,
    table: str,
    ids: Any,
    vectors: Any,
    update_id: str | None = None,
    version: Version = None,
    *,
    admin_key: str | None = None,
) -> Call[dict[str, Any]]:
    """Replace rows ``ids`` of ``table`` (at ``version``) with ``vectors`` (n x dim), durably:
    ``{"table", "version", "sequence", "rows"}``; the same ``update_id`` again applies nothing
    and answers the first update's sequence."""
    return update_rows_call(table, ids, vectors, update_id, version, admin_key)
