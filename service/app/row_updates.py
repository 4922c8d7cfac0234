"""Row updates: the use case of ``POST /v1/admin/tables/{table}/rows`` (API.md, "Row updates").

The table (at the version asked for) takes the update through its ``TableUpdates``: checked
(nothing applied when refused), written durably (the model repository, or Redis and its
replicas), and served by this worker before the answer. Other workers and processes follow
(``tables.update_follower``).
"""

from __future__ import annotations

from service.backends.redis_store import STORE_ERRORS
from service.decoding.row_update_request import RowUpdateRequest
from service.errors import BackendUnavailable, UpdateVersionNotFound
from service.results import Document
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable
from service.updates.redis_writer import VersionMissing
from service.updates.validation import NotUpdatable


def table_for_update(registry: TableRegistry, name: str, version: str | None) -> ServedTable:
    """The served table ``name`` at ``version`` (None: the default version).

    One place resolves the version of the rows route: a table serves one version here, so
    ``version`` must be None or that version's string (else ``404 version_not_found``).
    """
    table = registry.get(name)
    if version is not None and version != table.weights.version:
        raise UpdateVersionNotFound(
            f"table {name!r} does not serve version {version!r}",
            {"versions": [table.weights.version], "labels": {}},
        )
    return table


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
            "version": updates.version,
            "sequence": result.sequence,
            "rows": result.rows,
        }
    )
