"""Reference servers the benchmark compares against (not part of the service).

(a) ``tuned_app``: FastAPI done well by hand — orjson in, ``np.take``, orjson out (and a
binary twin). (b) ``naive_app``: the tutorial way — a pydantic model in, ``.tolist()`` out. (c) ``bare_app``:
no framework at all, the per-request ceiling. All read the table named by ``BENCH_TABLE`` (memory-mapped).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

TABLE = np.asarray(np.load(os.environ.get("BENCH_TABLE", "bench_data/big.npy"), mmap_mode="r"))
OPT = orjson.OPT_SERIALIZE_NUMPY

tuned_app = FastAPI()


@tuned_app.post("/lookup")
async def tuned_lookup(request: Request) -> Response:
    ids = np.asarray(orjson.loads(await request.body())["ids"], dtype=np.int64)
    vectors = np.take(TABLE, ids, axis=0)
    body = orjson.dumps({"shape": vectors.shape, "vectors": vectors}, option=OPT)
    return Response(body, media_type="application/json")


@tuned_app.post("/lookup_binary")
async def tuned_lookup_binary(request: Request) -> Response:
    ids = np.frombuffer(await request.body(), dtype="<i8")
    vectors = np.take(TABLE, ids, axis=0)
    return Response(vectors.tobytes(), media_type="application/octet-stream")


naive_app = FastAPI()


class NaiveRequest(BaseModel):
    ids: list[int]


@naive_app.post("/lookup")
async def naive_lookup(request: NaiveRequest) -> dict:
    vectors = TABLE[request.ids]
    return {"shape": list(vectors.shape), "vectors": vectors.tolist()}


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ceiling without a framework or a cache: raw ASGI, orjson in, ``np.take``, orjson
    (or the gathered bytes) out. What uvicorn and one bulk encode cost a request."""
    if scope["type"] != "http":
        return
    body = await _body(receive)
    if scope["path"] == "/lookup_binary":
        vectors = np.take(TABLE, np.frombuffer(body, dtype="<i8"), axis=0)
        payload, media = vectors.tobytes(), b"application/octet-stream"
    elif scope["path"] == "/lookup":
        vectors = np.take(TABLE, np.asarray(orjson.loads(body)["ids"], dtype=np.int64), axis=0)
        payload = orjson.dumps({"shape": vectors.shape, "vectors": vectors}, option=OPT)
        media = b"application/json"
    else:  # the bench's readiness probe
        payload, media = b"ok", b"text/plain"
    headers = [(b"content-type", media), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
