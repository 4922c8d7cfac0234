"""Every route of the service, declared once.

The raw-ASGI dispatcher (``service.http.dispatcher``) and the FastAPI app with its OpenAPI
schema and ``/docs`` (``service.http.fastapi_app``) are both generated from ``ROUTES``.
A route names its path template, methods, metric label (the path's last word), auth class,
a decoder per accepted content type, the use case it calls and the encoder of its result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from service.app import bags, embeddings, infer, lookup, neighbors, sequences, tables
from service.decoding.bags_request import decode_bags
from service.decoding.body import JSON, OCTET_STREAM, wants_binary
from service.decoding.neighbors_request import decode_neighbors
from service.decoding.openai_request import decode_embeddings
from service.decoding.requests import decode_lookup, decode_sequences
from service.decoding.v2_request import decode_v2_infer
from service.encoding.openai_response import encode_embeddings
from service.encoding.responses import (
    EncodedResponse,
    encode_document,
    encode_neighbors,
    encode_raw,
    encode_vectors,
)
from service.encoding.v2_response import encode_inference
from service.errors import ServiceError
from service.http import docs_pages, schemas
from service.http.call import Call
from service.metrics import UNKNOWN_TABLE
from service.results import Document
from service.tables.registry import TableRegistry

Auth = Literal["public", "probe", "key", "admin"]
"""public: never a key; probe: a key only with EMBED_AUTH_HEALTH; key: an API key when keys
are configured; admin: the admin key (the route exists only when one is set)."""

ANY_TYPE = "*"  # a decoder under this key reads the body whatever its Content-Type

Decoder = Callable[[Call], Any]
UseCase = Callable[[Call, Any], Awaitable[Any]]
Encoder = Callable[[Any], EncodedResponse]
Resolver = Callable[[Call], None]
DirectCheck = Callable[[Mapping[str, str], TableRegistry], bool]


@dataclass(frozen=True)
class RouteDoc:
    """What the OpenAPI schema says of a route."""

    summary: str
    tags: tuple[str, ...]
    body: type | None = None
    response: type | None = None
    errors: Mapping[int | str, dict[str, Any]] = field(default_factory=dict)
    in_schema: bool = True


@dataclass(frozen=True)
class Route:
    """One route: path template, methods, use case, decoders, encoder, auth, metric label."""

    path: str
    methods: tuple[str, ...]
    label: str
    auth: Auth
    use_case: UseCase
    encoder: Encoder
    doc: RouteDoc
    decoders: Mapping[str, Decoder] = field(default_factory=dict)
    resolve: Resolver | None = None
    direct: DirectCheck | None = None
    """Whether the direct lane (``service.http.direct_lane``) may answer a request of these
    path parameters: its table gathers inline, so the use case never waits on the event
    loop. ``None``: never (a route whose work always waits, or is not worth it)."""


# ----------------------------------------------------------------------------- resolvers
def _table(call: Call) -> None:
    name = call.params["table"]
    call.table_label = UNKNOWN_TABLE  # until the registry has found the table
    call.target = call.services.registry.get(name)
    call.table_label = name


def _model(call: Call) -> None:
    call.table_label = UNKNOWN_TABLE
    call.target = infer.resolve_model(
        call.services.registry, call.params["model"], call.params.get("version")
    )
    call.table_label = call.target[0].name


# ------------------------------------------------------------------------- direct lane
def _table_inline(params: Mapping[str, str], registry: TableRegistry) -> bool:
    return registry.gathers_inline(params["table"])


def _model_inline(params: Mapping[str, str], registry: TableRegistry) -> bool:
    try:
        table, _ = infer.resolve_model(registry, params["model"], params.get("version"))
    except ServiceError:
        return False  # the ASGI path answers the error
    return table.batcher.inline


# ------------------------------------------------------------------------------ decoders
def _lookup_body(call: Call) -> Any:
    return decode_lookup(call.body, call.media_type, call.headers, call.services.settings.max_ids)


def _sequences_body(call: Call) -> Any:
    limit = call.services.settings.max_ids
    return decode_sequences(call.body, call.media_type, call.headers, limit)


def _bags_body(call: Call) -> Any:
    return decode_bags(call.body, call.services.settings.max_ids)


def _neighbors_body(call: Call) -> Any:
    return decode_neighbors(call.body)


def _embeddings_body(call: Call) -> Any:
    request = decode_embeddings(call.body, call.services.settings.max_ids)
    registry = call.services.registry
    call.table_label = request.model if registry.has(request.model) else UNKNOWN_TABLE
    return request


def _infer_body(call: Call) -> Any:
    _, is_sequences = call.target
    header_length = call.headers.get("inference-header-content-length")
    limit = call.services.settings.max_ids
    return decode_v2_infer(call.body, header_length, limit, infer.output_names(is_sequences))


# ----------------------------------------------------------------------------- use cases
# The adapters below hand back the use case's coroutine (one await level fewer per request).
def _lookup(call: Call, request: Any) -> Awaitable[Any]:
    output = "binary" if wants_binary(call.headers.get("accept")) else request.encoding
    limit = call.services.settings.max_output_bytes
    return lookup.lookup(call.target, request, output, limit)


def _sequences(call: Call, request: Any) -> Awaitable[Any]:
    output = "binary" if wants_binary(call.headers.get("accept")) else request.encoding
    limit = call.services.settings.max_output_bytes
    return sequences.sequences(call.target, request, output, limit)


async def _bags(call: Call, request: Any) -> Any:
    output = "binary" if wants_binary(call.headers.get("accept")) else request.encoding
    return await bags.bags(call.target, request, output, call.services.settings.max_output_bytes)


async def _neighbors(call: Call, request: Any) -> Any:
    return await neighbors.neighbors(call.target, request)


async def _embeddings(call: Call, request: Any) -> Any:
    return await embeddings.embeddings(call.services.registry, request)


def _infer(call: Call, request: Any) -> Awaitable[Any]:
    table, is_sequences = call.target
    limit = call.services.settings.max_output_bytes
    return infer.infer(table, is_sequences, call.params["model"], request, limit)


async def _healthz(call: Call, _: Any) -> Any:
    return tables.liveness()


async def _readyz(call: Call, _: Any) -> Any:
    return tables.readiness(call.services.registry)


async def _metrics(call: Call, _: Any) -> Any:
    return tables.metrics_text(call.services.registry)


async def _tables(call: Call, _: Any) -> Any:
    return tables.list_tables(call.services.registry)


async def _table_info(call: Call, _: Any) -> Any:
    return tables.table_info(call.services.registry, call.params["table"])


async def _reload(call: Call, _: Any) -> Any:
    name = call.params["table"]
    call.table_label = name if call.services.registry.has(name) else UNKNOWN_TABLE
    return await tables.reload_table(call.services.registry, name)


async def _v2_server(call: Call, _: Any) -> Any:
    return infer.server_metadata()


async def _v2_live(call: Call, _: Any) -> Any:
    return Document({"live": True})


async def _v2_ready(call: Call, _: Any) -> Any:
    return infer.server_ready(call.services.registry)


async def _model_metadata(call: Call, _: Any) -> Any:
    registry, params = call.services.registry, call.params
    return infer.model_metadata(registry, params["model"], params.get("version"))


async def _model_ready(call: Call, _: Any) -> Any:
    registry, params = call.services.registry, call.params
    return infer.model_ready(registry, params["model"], params.get("version"))


async def _openapi(call: Call, _: Any) -> Any:
    return docs_pages.openapi_json(call.services.openapi())


async def _swagger(call: Call, _: Any) -> Any:
    return docs_pages.swagger_page()


async def _oauth2_redirect(call: Call, _: Any) -> Any:
    return docs_pages.oauth2_redirect_page()


async def _asset(call: Call, _: Any) -> Any:
    return docs_pages.asset(call.params["file"])


async def _redoc(call: Call, _: Any) -> Any:
    return docs_pages.redoc_page()


# ---------------------------------------------------------------------------------- docs
_V2_TAGS = ("v2 (Open Inference Protocol)",)
_BODY_TYPES = {JSON: _lookup_body, OCTET_STREAM: _lookup_body}


def _doc(summary: str, *tags: str, **more: Any) -> RouteDoc:
    return RouteDoc(summary, tags, **more)


def _v1_table_route(
    word: str, use_case: UseCase, decoders: Mapping[str, Decoder], doc: RouteDoc
) -> Route:
    return Route(
        f"/v1/tables/{{table}}/{word}",
        ("POST",),
        word,
        "key",
        use_case,
        encode_neighbors if word == "neighbors" else encode_vectors,
        doc,
        decoders,
        _table,
        direct=None if word == "neighbors" else _table_inline,  # a search always waits
    )


def _v2_model_routes(
    suffix: str, methods: tuple[str, ...], label: str, **route: Any
) -> list[Route]:
    """A V2 model route with and without ``/versions/{version}``."""
    return [
        Route(f"/v2/models/{{model}}{middle}{suffix}", methods, label, "key", **route)
        for middle in ("", "/versions/{version}")
    ]


E = schemas.ERROR_RESPONSES
V2E = schemas.V2_ERROR_RESPONSES

ROUTES: list[Route] = [
    Route(
        "/healthz",
        ("GET", "HEAD"),
        "healthz",
        "probe",
        _healthz,
        encode_document,
        _doc("Liveness: answers as soon as the process serves.", "health", response=schemas.Health),
    ),
    Route(
        "/readyz",
        ("GET", "HEAD"),
        "readyz",
        "probe",
        _readyz,
        encode_document,
        _doc(
            "Readiness: every table loaded and every batch worker alive (503 otherwise).",
            "health",
            response=schemas.Readiness,
            errors={503: {"model": schemas.Readiness, "description": "Not ready"}},
        ),
    ),
    Route(
        "/metrics",
        ("GET",),
        "metrics",
        "probe",
        _metrics,
        encode_raw,
        _doc("Prometheus text exposition.", "health"),
    ),
    Route(
        "/v1/tables",
        ("GET",),
        "tables",
        "key",
        _tables,
        encode_document,
        _doc("Every loaded table's TableInfo.", "tables", response=schemas.TablesList),
    ),
    Route(
        "/v1/tables/{table}",
        ("GET",),
        "table",
        "key",
        _table_info,
        encode_document,
        _doc("One table's TableInfo.", "tables", response=schemas.TableInfo, errors={404: E[404]}),
    ),
    _v1_table_route(
        "lookup",
        _lookup,
        _BODY_TYPES,
        _doc(
            "id -> vector for ids of any rank (JSON, base64 or binary).",
            "lookup",
            body=schemas.LookupBody,
            response=schemas.LookupResult,
            errors=E,
        ),
    ),
    _v1_table_route(
        "sequences",
        _sequences,
        {JSON: _sequences_body, OCTET_STREAM: _sequences_body},
        _doc(
            "Ragged id sequences -> padded vectors, mask and lengths.",
            "lookup",
            body=schemas.SequencesBody,
            response=schemas.SequencesResult,
            errors=E,
        ),
    ),
    _v1_table_route(
        "bags",
        _bags,
        {JSON: _bags_body},
        _doc(
            "Pooled multi-hot lookups: sum, mean, max (nn.EmbeddingBag) or sqrtn (TF).",
            "lookup",
            body=schemas.BagsBody,
            response=schemas.BagsResult,
            errors=E,
        ),
    ),
    _v1_table_route(
        "neighbors",
        _neighbors,
        {JSON: _neighbors_body},
        _doc(
            "Nearest rows by cosine, dot product or L2 (exact), best first, ties by lower id.",
            "similarity",
            body=schemas.NeighborsBody,
            response=schemas.NeighborsResult,
            errors=E,
        ),
    ),
    Route(
        "/v1/embeddings",
        ("POST",),
        "embeddings",
        "key",
        _embeddings,
        encode_embeddings,
        _doc(
            "OpenAI embeddings API with token-id input; one mean-pooled vector per input.",
            "openai",
            body=schemas.EmbeddingsBody,
            response=schemas.EmbeddingsResult,
            errors=E,
        ),
        {ANY_TYPE: _embeddings_body},
    ),
    Route(
        "/v1/admin/tables/{table}/reload",
        ("POST",),
        "reload",
        "admin",
        _reload,
        encode_document,
        _doc(
            "Load the table again from the repository and swap it in without downtime "
            "(only with EMBED_ADMIN_KEY, sent as 'Authorization: Bearer <key>').",
            "admin",
            response=schemas.TableInfo,
            errors={
                401: E[401],
                404: E[404],
                409: {"model": schemas.ErrorBody, "description": "New version failed to load"},
            },
        ),
    ),
    Route(
        "/v2",
        ("GET",),
        "v2",
        "key",
        _v2_server,
        encode_document,
        _doc("Server metadata.", *_V2_TAGS, errors=V2E),
    ),
    Route(
        "/v2/health/live",
        ("GET",),
        "live",
        "key",
        _v2_live,
        encode_document,
        _doc("Server liveness.", *_V2_TAGS, errors=V2E),
    ),
    Route(
        "/v2/health/ready",
        ("GET",),
        "ready",
        "key",
        _v2_ready,
        encode_document,
        _doc("Server readiness.", *_V2_TAGS, errors=V2E),
    ),
    *_v2_model_routes(
        "",
        ("GET",),
        "model",
        use_case=_model_metadata,
        encoder=encode_document,
        doc=_doc("Model metadata.", *_V2_TAGS, errors=V2E),
    ),
    *_v2_model_routes(
        "/ready",
        ("GET",),
        "ready",
        use_case=_model_ready,
        encoder=encode_document,
        doc=_doc("Model readiness.", *_V2_TAGS, errors=V2E),
    ),
    *_v2_model_routes(
        "/infer",
        ("POST",),
        "infer",
        use_case=_infer,
        encoder=encode_inference,
        doc=_doc(
            "Infer, JSON or with the binary tensor data extension both ways.",
            *_V2_TAGS,
            errors=V2E,
        ),
        decoders={ANY_TYPE: _infer_body},
        resolve=_model,
        direct=_model_inline,
    ),
    Route(
        "/openapi.json",
        ("GET",),
        "openapi",
        "key",
        _openapi,
        encode_raw,
        _doc("The OpenAPI schema.", "docs", in_schema=False),
    ),
    Route(
        "/docs",
        ("GET",),
        "docs",
        "key",
        _swagger,
        encode_raw,
        _doc("Swagger UI (assets served by the service: works offline).", "docs", in_schema=False),
    ),
    Route(
        "/docs/oauth2-redirect",
        ("GET",),
        "oauth2-redirect",
        "public",
        _oauth2_redirect,
        encode_raw,
        _doc("Swagger UI's OAuth2 redirect page.", "docs", in_schema=False),
    ),
    Route(
        "/docs/assets/{file}",
        ("GET",),
        "assets",
        "public",
        _asset,
        encode_raw,
        _doc("Swagger UI's scripts and styles.", "docs", in_schema=False),
    ),
    Route(
        "/redoc",
        ("GET",),
        "redoc",
        "key",
        _redoc,
        encode_raw,
        _doc("ReDoc (its script comes from a CDN).", "docs", in_schema=False),
    ),
]
