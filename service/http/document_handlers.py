"""What the routes without a request body run: health, metrics, table information, the
admin reload and the docs pages."""

from __future__ import annotations

from service.http import docs_pages
from service.http.call import Call
from service.metrics import UNKNOWN_TABLE
from service.results import Document, RawBody
from service.usecases import tables


async def healthz(call: Call, _: None) -> Document:
    """Liveness."""
    return tables.liveness()


async def readyz(call: Call, _: None) -> Document:
    """Readiness (503 with what failed)."""
    return tables.readiness(call.services.registry)


async def metrics_text(call: Call, _: None) -> RawBody:
    """The Prometheus exposition."""
    return tables.metrics_text(call.services.registry)


async def list_tables(call: Call, _: None) -> Document:
    """Every loaded table's TableInfo."""
    return tables.list_tables(call.services.registry)


async def table_info(call: Call, _: None) -> Document:
    """One table's TableInfo (of the version ``version=`` picks)."""
    return tables.table_info(call.services.registry, call.served_table())


async def reload_table(call: Call, _: None) -> Document:
    """Reload one table (at ``version=``, for a versioned one) in every worker (admin)."""
    name = call.params["table"]
    call.table_label = name if call.services.registry.has(name) else UNKNOWN_TABLE
    document, table = await tables.reload_table(call.services.registry, name, call.version())
    call.use_table(table)
    return document


async def openapi(call: Call, _: None) -> RawBody:
    """The OpenAPI schema."""
    return docs_pages.openapi_json(call.services.openapi())


async def swagger(call: Call, _: None) -> RawBody:
    """Swagger UI."""
    return docs_pages.swagger_page()


async def oauth2_redirect(call: Call, _: None) -> RawBody:
    """Swagger UI's OAuth2 redirect page."""
    return docs_pages.oauth2_redirect_page()


async def asset(call: Call, _: None) -> RawBody:
    """One of Swagger UI's assets."""
    return docs_pages.asset(call.params["file"])


async def redoc(call: Call, _: None) -> RawBody:
    """ReDoc."""
    return docs_pages.redoc_page()
