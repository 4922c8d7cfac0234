"""Table information, health, metrics and the admin reload."""

from __future__ import annotations

from service import metrics
from service.errors import (
    BackendUnavailable,
    ReloadFailed,
    TableLoadError,
    TableNotFound,
    TableRemoved,
)
from service.results import Document, RawBody
from service.tables.registry import TableRegistry
from service.tables.reloads import transient


def liveness() -> Document:
    """The process serves."""
    return Document({"status": "ok"})


def readiness(registry: TableRegistry) -> Document:
    """Ready (200) only in state "ready"; any other state answers 503 with what failed."""
    state, failed = registry.status()
    if state == "ready":
        return Document({"status": "ready", "tables": registry.names()})
    return Document({"status": state, "tables": registry.names(), "failed": failed}, 503)


def list_tables(registry: TableRegistry) -> Document:
    """Every loaded table's ``TableInfo``."""
    return Document({"tables": [table.info() for table in registry.tables()]})


def table_info(registry: TableRegistry, name: str) -> Document:
    """One table's ``TableInfo``."""
    return Document(registry.get(name).info())


def metrics_text(registry: TableRegistry) -> RawBody:
    """The Prometheus exposition of every worker of the server, this worker's cache gauges
    refreshed first."""
    registry.publish_row_cache_metrics()
    body, content_type = metrics.exposition()
    return RawBody(body, content_type)


async def reload_table(registry: TableRegistry, name: str) -> Document:
    """Load the table again and swap it in; the old version keeps serving if that fails."""
    previous = registry.get(name).weights.version if registry.has(name) else None
    try:
        served = await registry.reload(name)
    except Exception as exc:
        if transient(exc):  # the store, not the version: the same reload may work in a moment
            raise BackendUnavailable(
                f"the table's store cannot answer now; the previous version keeps serving: {exc}"
            ) from None
        if not isinstance(exc, TableLoadError):
            raise
        if previous is None and isinstance(exc, TableRemoved):
            raise TableNotFound(f"no table named {name!r}", {"table": name}) from None
        raise ReloadFailed(f"reload failed, the previous version keeps serving: {exc}") from None
    return Document({**served.info(), "previous_version": previous})
