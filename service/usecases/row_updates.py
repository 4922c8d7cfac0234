"""Row updates: the use case of ``POST /v1/admin/tables/{table}/rows`` (API.md, "Row updates").

The table (at the version asked for) takes the update through its ``TableUpdates``: checked
(nothing applied when refused), written durably (the model repository, or Redis and its
replicas), and served by this worker before the answer. Other workers and processes follow
(``tables.update_follower``).
"""

from __future__ import annotations

from service.backends.redis_store import STORE_ERRORS
from service.decoding.row_update_request import RowUpdateRequest
from service.errors import BackendUnavailable
from service.results import Document
from service.tables.served_table import ServedTable
from service.updates.redis_writer import VersionMissing
from service.updates.validation import NotUpdatable


async def update_rows(table: ServedTable, request: RowUpdateRequest) -> Document:
    """Apply one update to ``table``; ``{"table", "version", "sequence", "rows"}``."""
    updates = table.updates
    if updates is None:
        raise NotUpdatable(
            f"table {table.name!r} ({table.weights.stored_dtype}) cannot take row updates: "
            "int8 compact tables hold codes and scales; push or write a new version instead",
            {"table": table.name, "dtype": table.weights.stored_dtype},
        )
    try:
        result = await updates.write(request.ids, request.vectors, request.update_id)
    except VersionMissing as exc:
        raise BackendUnavailable(f"table {table.name!r}: {exc}; retry after the reload") from None
    except STORE_ERRORS as exc:
        raise BackendUnavailable(
            f"the store of table {table.name!r} cannot take the update now: {exc!r}"
        ) from None
    return Document(
        {
            "table": table.name,
            "version": table.served_version,
            "sequence": result.sequence,
            "rows": result.rows,
        }
    )
