"""OpenAI embeddings responses: ``{"object": "list", "data": [...], "model", "usage"}``."""

from __future__ import annotations

import base64

import numpy as np
import orjson

from service.encoding.responses import EncodedResponse
from service.results import Embeddings


def embeddings_response(
    model: str, vectors: np.ndarray, tokens: int, encoding: str
) -> EncodedResponse:
    """One ``embedding`` object per row of ``vectors`` (float32); base64 is little-endian float32."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if encoding == "base64":
        items = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        items = list(vectors)
    payload = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(items)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return EncodedResponse(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def encode_embeddings(result: Embeddings) -> EncodedResponse:
    """The OpenAI embeddings body of ``result``, with the timing headers."""
    response = embeddings_response(result.model, result.vectors, result.tokens, result.encoding)
    response.headers.update(result.timing.headers())
    return response
