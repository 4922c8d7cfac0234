"""FastAPI routes: health, tables, metrics, and the documented lookup/sequences routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import metrics
from service.encoding.responses import EncodedResponse
from service.errors import NotFound, ReloadFailed, TableLoadError, TableNotFound, Unauthorized
from service.http.auth import bearer_token, token_matches
from service.http.body_reader import read_body
from service.http.handlers import LookupHandlers
from service.http.schemas import (
    ERROR_RESPONSES,
    BagsBody,
    BagsResult,
    ErrorBody,
    Health,
    LookupBody,
    LookupResult,
    NeighborsBody,
    NeighborsResult,
    Readiness,
    SequencesBody,
    SequencesResult,
    TableInfo,
    TablesList,
)
from service.tables.registry import TableRegistry


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _encoded(response: EncodedResponse) -> Response:
    return Response(
        response.body,
        status_code=response.status,
        media_type=response.media_type,
        headers=response.headers,
    )


def _body_doc(model: type) -> dict[str, Any]:
    """Documents a request body that the route reads raw (JSON or octet-stream)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


def build_router(
    registry: TableRegistry,
    handlers: LookupHandlers,
    max_body_bytes: int,
    admin_key: bytes | None = None,
) -> APIRouter:
    """All routes of the service; lookup/sequences here run only with the fast path off."""
    router = APIRouter()

    @router.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Response:
        """Liveness: answers as soon as the process serves."""
        return _json({"status": "ok"})

    @router.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        responses={503: {"model": Readiness, "description": "Loading or degraded"}},
    )
    async def readyz() -> Response:
        """Readiness: every table loaded and every batch worker alive."""
        state, failed = registry.status()
        if state == "ready":
            return _json({"status": "ready", "tables": registry.names()})
        return _json({"status": state, "tables": registry.names(), "failed": failed}, 503)

    @router.get("/metrics", tags=["health"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition, summed over every worker of the server."""
        registry.publish_row_cache_metrics()
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @router.get("/v1/tables", response_model=TablesList, tags=["tables"])
    async def list_tables() -> Response:
        """Every loaded table's ``TableInfo``."""
        return _json({"tables": [t.info() for t in registry.tables()]})

    @router.get(
        "/v1/tables/{table}",
        response_model=TableInfo,
        tags=["tables"],
        responses={404: ERROR_RESPONSES[404]},
    )
    async def table_info(table: str) -> Response:
        """One table's ``TableInfo``."""
        return _json(registry.get(table).info())

    # The per-table POST routes read their body raw (JSON or octet-stream) and hand it to the
    # same handlers as the hot path; the models only document the bodies.
    table_routes = (
        (
            "lookup",
            handlers.lookup,
            LookupBody,
            LookupResult,
            "lookup",
            "id -> vector for ids of any rank (JSON, base64 or binary).",
        ),
        (
            "sequences",
            handlers.sequences,
            SequencesBody,
            SequencesResult,
            "lookup",
            "Ragged id sequences -> padded vectors, mask and lengths.",
        ),
        (
            "bags",
            handlers.bags,
            BagsBody,
            BagsResult,
            "lookup",
            "Pooled multi-hot lookups: sum, mean, max (nn.EmbeddingBag) or sqrtn (TF).",
        ),
        (
            "neighbors",
            handlers.neighbors,
            NeighborsBody,
            NeighborsResult,
            "similarity",
            "Nearest rows by cosine, dot product or L2 (exact), best first, ties by lower id.",
        ),
    )
    for name, handle, body_model, result_model, tag, summary in table_routes:
        router.add_api_route(
            f"/v1/tables/{{table}}/{name}",
            _raw_body_endpoint(handle, max_body_bytes),
            methods=["POST"],
            name=name,
            description=summary,
            response_model=result_model,
            tags=[tag],
            openapi_extra=_body_doc(body_model),
            responses=ERROR_RESPONSES,
        )

    @router.post(
        "/v1/admin/tables/{table}/reload",
        response_model=TableInfo,
        tags=["admin"],
        responses={
            401: ERROR_RESPONSES[401],
            404: ERROR_RESPONSES[404],
            409: {"model": ErrorBody, "description": "New version failed to load; old one serves"},
        },
    )
    async def reload_table(table: str, request: Request) -> Response:
        """Load the table again from the repository and swap it in without downtime.

        Enabled only when the service has an admin key (``EMBED_ADMIN_KEY``), which the
        request must carry as ``Authorization: Bearer <key>``.
        """
        if admin_key is None:
            raise NotFound(f"no route {request.url.path}")
        if not token_matches(bearer_token(request.scope["headers"]), [admin_key]):
            raise Unauthorized(
                "the admin key is required: send 'Authorization: Bearer <admin key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        previous = registry.get(table).weights.version if registry.has(table) else None
        try:
            served = await registry.reload(table)
        except TableLoadError as exc:
            if previous is None and "no longer in the repository" in str(exc):
                raise TableNotFound(f"no table named {table!r}", {"table": table}) from None
            raise ReloadFailed(
                f"reload failed, the previous version keeps serving: {exc}"
            ) from None
        return _json({**served.info(), "previous_version": previous})

    return router


def _raw_body_endpoint(handle: Any, max_body_bytes: int) -> Any:
    async def endpoint(table: str, request: Request) -> Response:
        body = await read_body(request.receive, max_body_bytes)
        return _encoded(await handle(table, body, _headers(request)))

    return endpoint


def _headers(request: Request) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
