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
from service.tables.served_table import ServedTable


def liveness() -> Document:
    """The process serves."""
    return Document({"status": "ok"})


def readiness(registry: TableRegistry) -> Document:
    """Ready (200) only in state "ready"; any other state answers 503 with what failed."""
    state, failed = registry.status()
    if state == "ready":
        # Held-back versions and unbound labels leave every table serving: named, still 200.
        extra = {"failed": failed} if failed else {}
        return Document({"status": "ready", "tables": registry.names(), **extra})
    return Document({"status": state, "tables": registry.names(), "failed": failed}, 503)


def list_tables(registry: TableRegistry) -> Document:
    """Every loaded table's ``TableInfo``."""
    return Document({"tables": [registry.info(table) for table in registry.tables()]})


def table_info(registry: TableRegistry, table: ServedTable) -> Document:
    """One table's ``TableInfo``: ``table`` is the version asked for (``version`` and
    ``versions`` describe the table's name)."""
    return Document(registry.info(table))


def list_groups(registry: TableRegistry) -> Document:
    """Every served group's ``GroupInfo``."""
    return Document({"groups": [group.info() for group in registry.groups()]})


def group_info(registry: TableRegistry, name: str) -> Document:
    """One group's ``GroupInfo``."""
    return Document(registry.group(name).info())


def metrics_text(registry: TableRegistry) -> RawBody:
    """The Prometheus exposition of every worker of the server, this worker's cache gauges
    refreshed first."""
    registry.publish_row_cache_metrics()
    body, content_type = metrics.exposition()
    return RawBody(body, content_type)


async def reload_table(
    registry: TableRegistry, name: str, version: str | None = None
) -> tuple[Document, ServedTable]:
    """Load the table again and swap it in; the old version keeps serving if that fails.
    ``version``: of a versioned table, the version to load again (TableRegistry.reload)."""
    previous = registry.get(name, version).served_version if registry.has(name) else None
    try:
        served = await registry.reload(name, version)
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
    return Document({**registry.info(served), "previous_version": previous}), served
