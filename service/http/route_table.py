"""Every route of the service, declared once.

The raw-ASGI dispatcher (``service.http.dispatcher``) and the FastAPI app with its OpenAPI
schema and ``/docs`` (``service.http.fastapi_app``) are both generated from ``ROUTES``.
A route names its path template, methods, metric label (the path's last word), auth class,
a decoder per accepted content type, the use case it calls and the encoder of its result;
what each runs lives in the handler modules (``table_handlers``, ``v2_handlers``,
``document_handlers``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from service.app.plan import Plan
from service.decoding.body import JSON, OCTET_STREAM
from service.encoding.openai_response import encode_embeddings
from service.encoding.responses import (
    EncodedResponse,
    encode_document,
    encode_neighbors,
    encode_raw,
    encode_vectors,
)
from service.encoding.v2_response import encode_inference
from service.http import document_handlers as documents
from service.http import row_update_handlers as row_updates
from service.http import schemas
from service.http import table_handlers as tables
from service.http import v2_handlers as v2
from service.http.call import Call
from service.tables.registry import TableRegistry

Auth = Literal["public", "probe", "key", "admin"]
"""public: never a key; probe: a key only with EMBED_AUTH_HEALTH; key: an API key when keys
are configured; admin: the admin key (the route exists only when one is set)."""

ANY_TYPE = "*"  # a decoder under this key reads the body whatever its Content-Type

Decoder = Callable[[Call], Any]
UseCase = Callable[[Call, Any], Awaitable[Any]]
InlineUseCase = Callable[[Call, Any], Any]
Planner = Callable[[Call, Any], Plan[Any]]
Encoder = Callable[[Any], EncodedResponse]
Resolver = Callable[[Call], None]
InlineCheck = Callable[[Mapping[str, str], TableRegistry], bool]


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
class Direct:
    """How the direct lane (``service.http.direct_lane``) answers a route: ``gathers_inline``
    says whether a request of these path parameters goes to a table that gathers inline (so
    its answer never waits on the event loop); ``answer`` is the use case's synchronous path
    (plan, gather inline, finish)."""

    gathers_inline: InlineCheck
    answer: InlineUseCase


@dataclass(frozen=True, kw_only=True)
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
    direct: Direct | None = None
    """``None``: the direct lane never answers this route (its work always waits, or is
    not worth it)."""


class PlannedRun(TypedDict):
    """A route's ``use_case`` and ``direct``, made from one planner."""

    use_case: UseCase
    direct: Direct


def planned(planner: Planner, gathers_inline: InlineCheck) -> PlannedRun:
    """A route's use case and direct answer, both from one planner: awaited from a task,
    or run inline by the lane."""

    def use_case(call: Call, request: Any) -> Awaitable[Any]:
        return planner(call, request).run()

    def answer(call: Call, request: Any) -> Any:
        return planner(call, request).run_inline()

    return PlannedRun(use_case=use_case, direct=Direct(gathers_inline, answer))


def _doc(summary: str, *tags: str, **more: Any) -> RouteDoc:
    return RouteDoc(summary, tags, **more)


def _v1_table_route(word: str, decoders: Mapping[str, Decoder], doc: RouteDoc, **run: Any) -> Route:
    return Route(
        path=f"/v1/tables/{{table}}/{word}",
        methods=("POST",),
        label=word,
        auth="key",
        encoder=encode_neighbors if word == "neighbors" else encode_vectors,
        doc=doc,
        decoders=decoders,
        resolve=tables.resolve_table,
        **run,
    )


def _v2_model_routes(
    suffix: str, methods: tuple[str, ...], label: str, **route: Any
) -> list[Route]:
    """A V2 model route with and without ``/versions/{version}``."""
    return [
        Route(
            path=f"/v2/models/{{model}}{middle}{suffix}",
            methods=methods,
            label=label,
            auth="key",
            **route,
        )
        for middle in ("", "/versions/{version}")
    ]


_V2_TAGS = ("v2 (Open Inference Protocol)",)
ERRORS = schemas.ERROR_RESPONSES
"""The error responses a /v1 route documents (API.md's error body)."""
V2_ERRORS = schemas.V2_ERROR_RESPONSES
"""The error responses a V2 route documents (the protocol's own error body)."""


def _v2_server_route(path: str, label: str, use_case: UseCase, summary: str) -> Route:
    """A V2 server route: GET, a document, V2's error body."""
    return Route(
        path=path,
        methods=("GET",),
        label=label,
        auth="key",
        use_case=use_case,
        encoder=encode_document,
        doc=_doc(summary, *_V2_TAGS, errors=V2_ERRORS),
    )


def _docs_page(path: str, label: str, auth: Auth, use_case: UseCase, summary: str) -> Route:
    """A page of the API docs: GET, raw bytes, left out of the schema."""
    return Route(
        path=path,
        methods=("GET",),
        label=label,
        auth=auth,
        use_case=use_case,
        encoder=encode_raw,
        doc=_doc(summary, "docs", in_schema=False),
    )


ROUTES: list[Route] = [
    Route(
        path="/healthz",
        methods=("GET", "HEAD"),
        label="healthz",
        auth="probe",
        use_case=documents.healthz,
        encoder=encode_document,
        doc=_doc(
            "Liveness: answers as soon as the process serves.", "health", response=schemas.Health
        ),
    ),
    Route(
        path="/readyz",
        methods=("GET", "HEAD"),
        label="readyz",
        auth="probe",
        use_case=documents.readyz,
        encoder=encode_document,
        doc=_doc(
            "Readiness: every table loaded and every batch worker alive (503 otherwise).",
            "health",
            response=schemas.Readiness,
            errors={503: {"model": schemas.Readiness, "description": "Not ready"}},
        ),
    ),
    Route(
        path="/metrics",
        methods=("GET",),
        label="metrics",
        auth="probe",
        use_case=documents.metrics_text,
        encoder=encode_raw,
        doc=_doc("Prometheus text exposition.", "health"),
    ),
    Route(
        path="/v1/tables",
        methods=("GET",),
        label="tables",
        auth="key",
        use_case=documents.list_tables,
        encoder=encode_document,
        doc=_doc("Every loaded table's TableInfo.", "tables", response=schemas.TablesList),
    ),
    Route(
        path="/v1/tables/{table}",
        methods=("GET",),
        label="table",
        auth="key",
        use_case=documents.table_info,
        encoder=encode_document,
        doc=_doc(
            "One table's TableInfo.",
            "tables",
            response=schemas.TableInfo,
            errors={404: ERRORS[404]},
        ),
    ),
    _v1_table_route(
        "lookup",
        {JSON: tables.lookup_body, OCTET_STREAM: tables.lookup_body},
        _doc(
            "id -> vector for ids of any rank (JSON, base64 or binary).",
            "lookup",
            body=schemas.LookupBody,
            response=schemas.LookupResult,
            errors=ERRORS,
        ),
        **planned(tables.plan_lookup, tables.table_gathers_inline),
    ),
    _v1_table_route(
        "sequences",
        {JSON: tables.sequences_body, OCTET_STREAM: tables.sequences_body},
        _doc(
            "Ragged id sequences -> padded vectors, mask and lengths.",
            "lookup",
            body=schemas.SequencesBody,
            response=schemas.SequencesResult,
            errors=ERRORS,
        ),
        **planned(tables.plan_sequences, tables.table_gathers_inline),
    ),
    _v1_table_route(
        "bags",
        {JSON: tables.bags_body},
        _doc(
            "Pooled multi-hot lookups: sum, mean, max (nn.EmbeddingBag) or sqrtn (TF).",
            "lookup",
            body=schemas.BagsBody,
            response=schemas.BagsResult,
            errors=ERRORS,
        ),
        **planned(tables.plan_bags, tables.table_gathers_inline),
    ),
    _v1_table_route(
        "neighbors",
        {JSON: tables.neighbors_body},
        _doc(
            "Nearest rows by cosine, dot product or L2 (exact), best first, ties by lower id.",
            "similarity",
            body=schemas.NeighborsBody,
            response=schemas.NeighborsResult,
            errors=ERRORS,
        ),
        use_case=tables.find_neighbors,  # a search always waits: never the lane
    ),
    Route(
        path="/v1/embeddings",
        methods=("POST",),
        label="embeddings",
        auth="key",
        use_case=tables.embed,
        encoder=encode_embeddings,
        doc=_doc(
            "OpenAI embeddings API with token-id input; one mean-pooled vector per input.",
            "openai",
            body=schemas.EmbeddingsBody,
            response=schemas.EmbeddingsResult,
            errors=ERRORS,
        ),
        decoders={ANY_TYPE: tables.embeddings_body},
    ),
    Route(
        path="/v1/admin/tables/{table}/reload",
        methods=("POST",),
        label="reload",
        auth="admin",
        use_case=documents.reload_table,
        encoder=encode_document,
        doc=_doc(
            "Load the table again from the repository and swap it in without downtime "
            "(only with EMBED_ADMIN_KEY, sent as 'Authorization: Bearer <key>').",
            "admin",
            response=schemas.TableInfo,
            errors={
                401: ERRORS[401],
                404: ERRORS[404],
                409: {"model": schemas.ErrorBody, "description": "New version failed to load"},
            },
        ),
    ),
    Route(  # row updates (issue 25)
        path="/v1/admin/tables/{table}/rows",
        methods=("POST",),
        label="rows",
        auth="admin",
        encoder=encode_document,
        doc=_doc(row_updates.SUMMARY, "admin", errors=ERRORS, **row_updates.SCHEMAS),
        **row_updates.RUN,
    ),
    _v2_server_route("/v2", "v2", v2.server_metadata, "Server metadata."),
    _v2_server_route("/v2/health/live", "live", v2.live, "Server liveness."),
    _v2_server_route("/v2/health/ready", "ready", v2.ready, "Server readiness."),
    *_v2_model_routes(
        "",
        ("GET",),
        "model",
        use_case=v2.model_metadata,
        encoder=encode_document,
        doc=_doc("Model metadata.", *_V2_TAGS, errors=V2_ERRORS),
    ),
    *_v2_model_routes(
        "/ready",
        ("GET",),
        "ready",
        use_case=v2.model_ready,
        encoder=encode_document,
        doc=_doc("Model readiness.", *_V2_TAGS, errors=V2_ERRORS),
    ),
    *_v2_model_routes(
        "/infer",
        ("POST",),
        "infer",
        **planned(v2.plan_infer, v2.model_gathers_inline),
        encoder=encode_inference,
        doc=_doc(
            "Infer, JSON or with the binary tensor data extension both ways.",
            *_V2_TAGS,
            errors=V2_ERRORS,
        ),
        decoders={ANY_TYPE: v2.infer_body},
        resolve=v2.resolve_model,
    ),
    _docs_page("/openapi.json", "openapi", "key", documents.openapi, "The OpenAPI schema."),
    _docs_page(
        "/docs",
        "docs",
        "key",
        documents.swagger,
        "Swagger UI (assets served by the service: works offline).",
    ),
    _docs_page(
        "/docs/oauth2-redirect",
        "oauth2-redirect",
        "public",
        documents.oauth2_redirect,
        "Swagger UI's OAuth2 redirect page.",
    ),
    _docs_page(
        "/docs/assets/{file}",
        "assets",
        "public",
        documents.asset,
        "Swagger UI's scripts and styles.",
    ),
    _docs_page("/redoc", "redoc", "key", documents.redoc, "ReDoc (its script comes from a CDN)."),
]
