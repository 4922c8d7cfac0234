"""Builds the service's ASGI app: FastAPI for routes and docs, the hot path in front."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.errors import InvalidRequest, MethodNotAllowed, NotFound, ServiceError
from service.http.auth import ApiKeyGuard
from service.http.error_responses import error_response_for, unexpected_error_response
from service.http.handlers import LookupHandlers
from service.http.hot_path import HotPathApp
from service.http.openai_routes import build_openai_router
from service.http.routes import build_router
from service.http.schemas import (
    BagsBody,
    EmbeddingsBody,
    LookupBody,
    NeighborsBody,
    SequencesBody,
)
from service.http.v2_routes import V2Handlers, build_v2_router
from service.logs import configure_logging
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry

log = logging.getLogger(__name__)


def _as_response(error: ServiceError, path: str = "") -> Response:
    encoded = error_response_for(path, error)
    return Response(encoded.body, encoded.status, encoded.headers, encoded.media_type)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error FastAPI/Starlette raises gets API.md's body, mapped here and only here."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return _as_response(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _as_response(NotFound(f"no route {request.url.path}"), request.url.path)
        if exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            response = _as_response(error, request.url.path)
            if exc.headers and "Allow" in exc.headers:
                response.headers["allow"] = exc.headers["Allow"]
            return response
        generic = ServiceError(str(exc.detail))
        generic.status, generic.code = exc.status_code, "http_error"  # type: ignore[misc]
        return _as_response(generic, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        error = InvalidRequest("invalid request", {"errors": exc.errors()[:5]})
        return _as_response(error, request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        encoded = unexpected_error_response(exc, request.url.path)
        return Response(encoded.body, encoded.status, encoded.headers, encoded.media_type)


def _add_body_schemas(app: FastAPI) -> None:
    """Request bodies read raw by the routes still appear, as models, in the OpenAPI schema."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = default_openapi()
        _, extra = models_json_schema(
            [
                (LookupBody, "validation"),
                (SequencesBody, "validation"),
                (EmbeddingsBody, "validation"),
                (BagsBody, "validation"),
                (NeighborsBody, "validation"),
            ],
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(extra.get("$defs", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ServiceSettings, registry: TableRegistry | None = None) -> HotPathApp:
    """The ASGI app for ``settings``; ``registry`` may be injected (tests use fake backends)."""
    registry = registry or TableRegistry(settings)
    handlers = LookupHandlers(registry, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background: /healthz answers at once, /readyz says "loading".
        loader = asyncio.create_task(registry.load(), name="table-loader")
        loader.add_done_callback(_log_loader_failure)
        _reload_on_sighup(registry)
        try:
            yield
        finally:
            if not loader.done():
                loader.cancel()
            await registry.close()

    app = FastAPI(
        title="Embedding lookup service",
        version=__version__,
        description="Trained embedding tables served by id: lookups, masked sequences. See API.md.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    admin_key = settings.admin_key.get_secret_value().encode() if settings.admin_key else None
    app.include_router(build_router(registry, handlers, settings.max_body_bytes, admin_key))
    v2 = V2Handlers(registry, handlers, settings)
    app.include_router(build_v2_router(v2))
    app.include_router(build_openai_router(registry, handlers, settings))
    _add_body_schemas(app)
    app.state.registry = registry
    front = HotPathApp(
        app,
        handlers,
        settings.max_body_bytes,
        settings.fast_path,
        ApiKeyGuard.from_settings(settings),
        v2,
    )
    front.registry = registry  # type: ignore[attr-defined]
    return front


def _reload_on_sighup(registry: TableRegistry) -> None:
    """SIGHUP reloads every table in every worker (with several workers the supervisor
    forwards it to one of them, whose reload reaches the others: ``TableRegistry.reload``)."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(
            signal.SIGHUP, lambda: loop.create_task(registry.reload_all(), name="sighup-reload")
        )


def _log_loader_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("loading the model repository failed", exc_info=task.exception())


def create_app_from_env() -> HotPathApp:
    """Factory for uvicorn workers: settings from the ``EMBED_*`` environment."""
    settings = ServiceSettings()
    configure_logging(settings.log_level)
    return create_app(settings)
