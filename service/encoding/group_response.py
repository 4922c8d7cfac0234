"""``{"group", "version", "tables": {member: {"shape", "dtype", "vectors"}}}``: one body."""

from __future__ import annotations

import orjson

from service.encoding.responses import EncodedResponse, vectors_base64, vectors_json
from service.results import GroupVectors, Timing, Vectors


def _member_text(vectors: Vectors) -> bytes:
    if vectors.text is not None:
        text = vectors.text
    else:
        assert vectors.array is not None  # Vectors without text carry their array
        encode = vectors_base64 if vectors.output == "base64" else vectors_json
        text = encode(vectors.array)
    return b"".join(
        (
            b'{"shape":',
            orjson.dumps(list(vectors.shape)),
            b',"dtype":',
            orjson.dumps(vectors.dtype),
            b',"vectors":',
            text,
            b"}",
        )
    )


def encode_group(result: GroupVectors) -> EncodedResponse:
    """The group lookup's JSON body, assembled once from every member's vector text."""
    members = b",".join(
        orjson.dumps(stem) + b":" + _member_text(vectors) for stem, vectors in result.members
    )
    timing = Timing()
    for _, vectors in result.members:
        timing.queue_seconds += vectors.timing.queue_seconds
        timing.backend_seconds += vectors.timing.backend_seconds
    head = b'{"group":' + orjson.dumps(result.group) + b',"version":'
    body = head + orjson.dumps(result.version) + b',"tables":{' + members + b"}}"
    return EncodedResponse(body, headers=timing.headers())
