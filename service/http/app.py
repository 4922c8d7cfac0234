"""Builds the service's ASGI app: the route table served by the raw-ASGI front, with the
FastAPI app generated from the same table behind it (schema, docs, ``--no-raw-asgi-front``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from service import __version__, metrics
from service.http.asgi_front import FrontApp
from service.http.auth import ApiKeyGuard
from service.http.call import Services
from service.http.direct_lane import DirectLane
from service.http.dispatcher import Dispatcher
from service.http.fastapi_app import add_body_schemas, add_routes, install_error_handlers
from service.http.route_matcher import RouteMatcher
from service.http.route_table import ROUTES
from service.logs import configure_logging
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry

log = logging.getLogger(__name__)


def _lifespan(registry: TableRegistry) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load the tables in the background at start-up, flush metrics every second; close
    the tables at shutdown."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background: /healthz answers at once, /readyz says "loading".
        loader = asyncio.create_task(registry.load(), name="table-loader")
        loader.add_done_callback(_log_loader_failure)
        flusher = asyncio.create_task(metrics.flush_periodically(), name="metrics-flusher")
        _reload_on_sighup(registry)
        try:
            yield
        finally:
            if not loader.done():
                loader.cancel()
            await registry.close()
            flusher.cancel()  # after the drain: its last flush holds every request
            with contextlib.suppress(asyncio.CancelledError):
                await flusher

    return lifespan


def create_app(settings: ServiceSettings, registry: TableRegistry | None = None) -> FrontApp:
    """The ASGI app for ``settings``; ``registry`` may be injected (tests use fake backends)."""
    registry = registry or TableRegistry(settings)
    app = FastAPI(
        title="Embedding lookup service",
        version=__version__,
        description="Trained embedding tables served by id: lookups, masked sequences. See docs/api.md.",
        lifespan=_lifespan(registry),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    services = Services(registry, settings, app.openapi)
    admin_key = settings.admin_key.get_secret_value().encode() if settings.admin_key else None
    dispatcher = Dispatcher(services, ApiKeyGuard.from_settings(settings), admin_key)
    add_routes(app, ROUTES, dispatcher)
    add_body_schemas(app, ROUTES)
    services.openapi = app.openapi
    app.state.registry = registry
    matcher = RouteMatcher(ROUTES)
    lane = None
    if settings.raw_asgi_front and settings.direct_lane:
        lane = DirectLane(dispatcher, matcher)
    return FrontApp(app, dispatcher, matcher, settings.raw_asgi_front, lane)


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


def create_app_from_env() -> FrontApp:
    """Factory for uvicorn workers: settings from the ``EMBED_*`` environment."""
    settings = ServiceSettings()
    configure_logging(settings.log_level)
    return create_app(settings)
