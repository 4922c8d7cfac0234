"""The FastAPI app generated from ``ROUTES``: the OpenAPI schema, and every route served
through the same dispatcher (it answers all of them with ``--no-raw-asgi-front``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.decoding.body import JSON, OCTET_STREAM
from service.encoding.responses import EncodedResponse
from service.errors import InvalidRequest, MethodNotAllowed, NotFound, ServiceError
from service.http.asgi_front import send_response
from service.http.dispatcher import Dispatcher
from service.http.error_responses import error_response_for, unexpected_error_response
from service.http.route_spec import Route


def _as_response(error: ServiceError, path: str = "") -> Response:
    encoded = error_response_for(path, error)
    return Response(encoded.body, encoded.status, encoded.headers, encoded.media_type)


def install_error_handlers(app: FastAPI) -> None:
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
        # This instance only shadows the ClassVars (which mypy will not let an instance assign).
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


class _Sent(Response):
    """An ``EncodedResponse`` sent as the raw-ASGI front sends it: in chunks when large, so that
    the ids-in-flight budget (released once this returns) counts until it was handed over."""

    def __init__(self, encoded: EncodedResponse) -> None:
        super().__init__(status_code=encoded.status)
        self.encoded = encoded

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send_response(send, self.encoded, scope["method"] == "HEAD")


def _endpoint(route: Route, dispatcher: Dispatcher) -> Callable[..., Any]:
    """A FastAPI endpoint that hands the request to the dispatcher; its signature names the
    path parameters so that the schema documents them."""

    async def endpoint(request: Request, **_: str) -> Response:
        encoded = await dispatcher.serve(route, request.path_params, request.scope, request.receive)
        if encoded is None:  # the client left; nobody reads this
            return Response(status_code=499)
        return _Sent(encoded)

    names = [part[1:-1] for part in route.path.split("/") if part.startswith("{")]
    parameters = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    ]
    parameters += [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=str) for n in names
    ]
    # inspect.signature() (and so FastAPI) reads __signature__; typeshed has no such attribute.
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = f"{route.label}_{len(names)}"
    return endpoint


VERSION_PARAMETER = {
    "name": "version",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "A served version number (`3`) or label (`stable`); the default without it.",
}
VERSION_HEADER_DOC = {
    "X-Table-Version": {
        "description": "The version that answered (on every response of a table route).",
        "schema": {"type": "string"},
    }
}


def _extra_doc(route: Route) -> dict[str, Any] | None:
    """Documents a request body that the route reads raw (JSON and/or octet-stream), and for
    a versioned route its ``version`` query parameter and ``X-Table-Version`` header."""
    extra: dict[str, Any] = {}
    if route.versioned or route.path.startswith("/v2/models/") or route.label == "embeddings":
        extra["responses"] = {"200": {"headers": VERSION_HEADER_DOC}}
    if route.versioned:
        extra["parameters"] = [VERSION_PARAMETER]
    model = route.doc.body
    if model is None:
        return extra or None
    content: dict[str, Any] = {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    if OCTET_STREAM in route.decoders:
        content[OCTET_STREAM] = {"schema": {"type": "string", "format": "binary"}}
    return {**extra, "requestBody": {"required": True, "content": content}}


def add_routes(app: FastAPI, routes: Sequence[Route], dispatcher: Dispatcher) -> None:
    """One FastAPI route per table entry (HEAD answered, but left out of the schema)."""
    for route in routes:
        endpoint = _endpoint(route, dispatcher)
        methods = [method for method in route.methods if method != "HEAD"]
        app.add_api_route(
            route.path,
            endpoint,
            methods=methods,
            name=route.label,
            summary=route.doc.summary,
            response_model=route.doc.response,
            response_class=Response,
            tags=list(route.doc.tags),
            responses=dict(route.doc.errors),
            openapi_extra=_extra_doc(route),
            include_in_schema=route.doc.in_schema,
        )
        if "HEAD" in route.methods:
            app.add_api_route(route.path, endpoint, methods=["HEAD"], include_in_schema=False)


def add_body_schemas(app: FastAPI, routes: Sequence[Route]) -> None:
    """Request bodies read raw by the routes still appear, as models, in the OpenAPI schema."""
    default_openapi = app.openapi
    models = [route.doc.body for route in routes if route.doc.body is not None]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = default_openapi()
        _, extra = models_json_schema(
            [(model, "validation") for model in dict.fromkeys(models)],
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(extra.get("$defs", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
