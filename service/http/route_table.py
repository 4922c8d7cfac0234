"""Every route of the service, declared once.

The raw-ASGI dispatcher (``service.http.dispatcher``) and the FastAPI app with its OpenAPI
schema and ``/docs`` (``service.http.fastapi_app``) are both generated from ``ROUTES``.
A route names its path template, methods, metric label (the path's last word), auth class,
a decoder per accepted content type, the use case it calls and the encoder of its result;
what each runs lives in the handler modules (``table_handlers``, ``v2_handlers``,
``document_handlers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.decoding.body import JSON, OCTET_STREAM
from service.encoding.group_response import encode_group
from service.encoding.openai_response import encode_embeddings
from service.encoding.responses import (
    encode_document,
    encode_neighbors,
    encode_raw,
    encode_vectors,
)
from service.encoding.v2_response import encode_inference
from service.http import document_handlers as documents
from service.http import group_handlers as groups
from service.http import row_update_handlers as row_updates
from service.http import schemas
from service.http import table_handlers as tables
from service.http import v2_handlers as v2
from service.http.route_spec import (
    ANY_TYPE,
    Auth,
    Decoder,
    Encoder,
    Resolver,
    Route,
    RouteDoc,
    UseCase,
    planned,
)


def _versioned(resolve: Resolver) -> dict[str, Any]:
    """A route resolved by ``resolve``, which reads ``?version=`` (declared here, once)."""
    return {"resolve": resolve, "versioned": True}


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
        **_versioned(tables.resolve_table),
        **run,
    )


def _keyed_post(
    path: str,
    label: str,
    use_case: UseCase,
    encoder: Encoder,
    doc: RouteDoc,
    decoders: Mapping[str, Decoder],
    **more: Any,
) -> Route:
    """A POST route with a body, behind the API key."""
    return Route(
        path=path,
        methods=("POST",),
        label=label,
        auth="key",
        use_case=use_case,
        encoder=encoder,
        doc=doc,
        decoders=decoders,
        **more,
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


def _posted_doc(summary: str, tag: str, body: type, response: type) -> RouteDoc:
    """The docs of a route with a body: its models and the /v1 error responses."""
    return _doc(summary, tag, body=body, response=response, errors=ERRORS)


def _collection(
    words: tuple[str, str],
    use_cases: tuple[UseCase, UseCase],
    responses: tuple[type, type],
    **one: Any,
) -> list[Route]:
    """``GET /v1/<things>`` (every one's info) and ``GET /v1/<things>/{<thing>}`` (one's,
    404 when there is none; ``one``: more of that route, such as its resolver)."""
    many, single = words
    info = responses[1].__name__
    return [
        _document(
            f"/v1/{many}",
            many,
            use_cases[0],
            _doc(f"Every served {single}'s {info}.", many, response=responses[0]),
        ),
        _document(
            f"/v1/{many}/{{{single}}}",
            single,
            use_cases[1],
            _doc(f"One {single}'s {info}.", many, response=responses[1], errors={404: ERRORS[404]}),
            **one,
        ),
    ]


def _v2_server_route(path: str, label: str, use_case: UseCase, summary: str) -> Route:
    """A V2 server route: GET, a document, V2's error body."""
    return _document(path, label, use_case, _doc(summary, *_V2_TAGS, errors=V2_ERRORS))


def _document(
    path: str, label: str, use_case: UseCase, doc: RouteDoc, auth: Auth = "key", **more: Any
) -> Route:
    """A GET route answering a JSON document."""
    methods = more.pop("methods", ("GET",))
    return Route(
        path=path,
        methods=methods,
        label=label,
        auth=auth,
        use_case=use_case,
        encoder=encode_document,
        doc=doc,
        **more,
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
    _document(
        "/healthz",
        "healthz",
        documents.healthz,
        _doc("Liveness: answers as soon as the process serves.", "health", response=schemas.Health),
        auth="probe",
        methods=("GET", "HEAD"),
    ),
    _document(
        "/readyz",
        "readyz",
        documents.readyz,
        _doc(
            "Readiness: every table loaded and every batch worker alive (503 otherwise).",
            "health",
            response=schemas.Readiness,
            errors={503: {"model": schemas.Readiness, "description": "Not ready"}},
        ),
        auth="probe",
        methods=("GET", "HEAD"),
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
    *_collection(
        ("tables", "table"),
        (documents.list_tables, documents.table_info),
        (schemas.TablesList, schemas.TableInfo),
        **_versioned(tables.resolve_table),
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
    _keyed_post(
        "/v1/embeddings",
        "embeddings",
        tables.embed,
        encode_embeddings,
        _posted_doc(
            "OpenAI embeddings API with token-id input; one mean-pooled vector per input.",
            "openai",
            schemas.EmbeddingsBody,
            schemas.EmbeddingsResult,
        ),
        {ANY_TYPE: tables.embeddings_body},
    ),
    *_collection(
        ("groups", "group"),
        (groups.list_groups, groups.group_info),
        (schemas.GroupsList, schemas.GroupInfo),
    ),
    _keyed_post(
        "/v1/groups/{group}/lookup",
        "lookup",
        groups.lookup,
        encode_group,
        _posted_doc(
            "Several members of a group in one request, every one at the same group version.",
            "groups",
            schemas.GroupLookupBody,
            schemas.GroupLookupResult,
        ),
        {JSON: groups.group_lookup_body},
        **_versioned(groups.resolve_group),
    ),
    _document(
        "/v1/admin/tables/{table}/reload",
        "reload",
        documents.reload_table,
        _doc(
            "Load the table again from the repository and swap it in without downtime "
            "(only with EMBED_ADMIN_KEY, sent as 'Authorization: Bearer <key>'). A versioned "
            "table: read the repository now, loading ?version= (every version) again.",
            "admin",
            response=schemas.TableInfo,
            errors={
                401: ERRORS[401],
                404: ERRORS[404],
                409: {"model": schemas.ErrorBody, "description": "New version failed to load"},
            },
        ),
        auth="admin",
        methods=("POST",),
        **_versioned(tables.resolve_version),
    ),
    Route(  # row updates (issue 25)
        path="/v1/admin/tables/{table}/rows",
        methods=("POST",),
        label="rows",
        auth="admin",
        encoder=encode_document,
        doc=_doc(row_updates.SUMMARY, "admin", errors=ERRORS, **row_updates.SCHEMAS),
        **_versioned(tables.resolve_table),
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
        resolve=v2.resolve_model,
        doc=_doc("Model metadata.", *_V2_TAGS, errors=V2_ERRORS),
    ),
    *_v2_model_routes(
        "/ready",
        ("GET",),
        "ready",
        use_case=v2.model_ready,
        encoder=encode_document,
        resolve=v2.resolve_model,
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
