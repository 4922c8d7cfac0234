"""OpenAI-compatible ``POST /v1/embeddings`` over token-id input.

``model`` names the table; an int or a flat list of ints is one input, a list of lists one
input per inner list; each input's embedding is the mean of its rows (after ``max_norm``
when the table has it). ``dimensions`` keeps the first n components and renormalises to unit
L2 norm, as OpenAI's text-embedding-3 models do (meaningful for Matryoshka-trained tables).
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.decoding.ids import check_in_range, segment_position
from service.decoding.openai_request import decode_embeddings
from service.encoding.openai_response import embeddings_response
from service.errors import InvalidRequest
from service.http.body_reader import read_body
from service.http.handlers import LookupHandlers, Timing
from service.http.schemas import ERROR_RESPONSES, EmbeddingsResult
from service.semantics.pooling import segment_means
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry


def build_openai_router(
    registry: TableRegistry, handlers: LookupHandlers, settings: ServiceSettings
) -> APIRouter:
    router = APIRouter(tags=["openai"])

    @router.post(
        "/v1/embeddings",
        response_model=EmbeddingsResult,
        responses=ERROR_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingsBody"}}
                },
            }
        },
    )
    async def embeddings(request: Request) -> Response:
        """OpenAI embeddings API with token-id input; one mean-pooled vector per input."""
        body = await read_body(request.receive, settings.max_body_bytes)
        call = decode_embeddings(body, settings.max_ids)
        table = registry.get(call.model)
        check_in_range(call.flat_ids, table.rows, lambda at: segment_position(call.lengths, at))
        if call.dimensions is not None and call.dimensions > table.dim:
            raise InvalidRequest(f"dimensions {call.dimensions} exceeds the table's {table.dim}")
        timing = Timing()
        rows = await handlers.rows(table, call.flat_ids, "float32", timing)
        vectors = segment_means(rows, call.lengths)
        if call.dimensions is not None and call.dimensions < table.dim:
            vectors = vectors[:, : call.dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
        encoded = embeddings_response(
            call.model, vectors, int(call.flat_ids.size), call.encoding_format
        )
        encoded.headers.update(timing.headers())
        return Response(encoded.body, 200, encoded.headers, encoded.media_type)

    return router
