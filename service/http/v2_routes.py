"""Open Inference Protocol (KServe V2) routes, as Triton, KServe and MLServer speak them.

Each table is a model: input ``ids`` (INT64/INT32, any shape) -> output ``embeddings``
(FP32, ``ids.shape + [dim]``). ``{table}.sequences`` is the same table with Keras/torch
masking: input ``ids`` of shape ``[B, L]`` (already padded), outputs ``embeddings``
(zeros at masked positions) and ``mask`` (BOOL ``[B, L]``, false where the id is the
table's padding id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import __version__
from service.decoding.ids import check_in_range
from service.decoding.v2_request import decode_v2_infer
from service.encoding.responses import EncodedResponse
from service.encoding.v2_response import V2Output, v2_infer_response
from service.errors import NotFound, PayloadTooLarge, TableNotFound
from service.http.body_reader import read_body
from service.http.handlers import LookupHandlers, Timing
from service.http.schemas import V2_ERROR_RESPONSES
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable

SEQUENCES_SUFFIX = ".sequences"
MODEL_VERSION = "1"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _encoded(response: EncodedResponse) -> Response:
    return Response(response.body, response.status, response.headers, response.media_type)


class V2Handlers:
    """Model resolution and ``infer``, shared by the FastAPI routes and the lean hot path."""

    def __init__(
        self, registry: TableRegistry, handlers: LookupHandlers, settings: ServiceSettings
    ) -> None:
        self.registry = registry
        self.handlers = handlers
        self.settings = settings

    def resolve(self, model: str, version: str | None = None) -> tuple[ServedTable, bool]:
        """The table behind ``model`` and whether it is the ``.sequences`` variant."""
        if version is not None and version != MODEL_VERSION:
            raise NotFound(f"model {model!r} has no version {version!r} (only {MODEL_VERSION!r})")
        if self.registry.has(model):
            return self.registry.get(model), False
        if model.endswith(SEQUENCES_SUFFIX) and self.registry.has(model[: -len(SEQUENCES_SUFFIX)]):
            return self.registry.get(model[: -len(SEQUENCES_SUFFIX)]), True
        self.registry.check_not_failed(model)  # failed is not missing: 503 table_unavailable
        self.registry.check_not_failed(model.removesuffix(SEQUENCES_SUFFIX))
        raise TableNotFound(f"unknown model {model!r}")

    async def infer(
        self, model: str, body: bytes, headers: Mapping[str, str], version: str | None = None
    ) -> EncodedResponse:
        """``POST /v2/models/{model}/infer``: JSON or the binary tensor extension both ways."""
        table, sequences = self.resolve(model, version)
        settings = self.settings
        names = ("embeddings", "mask") if sequences else ("embeddings",)
        call = decode_v2_infer(
            body, headers.get("inference-header-content-length"), settings.max_ids, names
        )
        ids = call.ids
        check_in_range(ids, table.rows)
        size = ids.size * table.dim * 4
        if size > settings.max_output_bytes:
            raise PayloadTooLarge(
                f"the response would hold {size} bytes of vectors; the limit is {settings.max_output_bytes}"
            )
        flat = ids.reshape(-1)
        timing = Timing()
        if sequences:
            mask = flat != table.pad_id if table.pad_id is not None else np.ones(flat.size, bool)
            vectors = np.zeros((flat.size, table.dim), np.float32)
            if mask.any():
                vectors[mask] = await self.handlers.rows(table, flat[mask], "float32", timing)
            arrays = {
                "embeddings": vectors.reshape(*ids.shape, table.dim),
                "mask": mask.reshape(ids.shape),
            }
        else:
            rows = await self.handlers.rows(table, flat, "float32", timing)
            arrays = {"embeddings": rows.reshape(*ids.shape, table.dim)}
        wanted = call.outputs or list(names)
        outputs = [V2Output(name, arrays[name], call.wants_binary(name)) for name in wanted]
        response = v2_infer_response(model, MODEL_VERSION, call.request_id, outputs)
        response.headers.update(timing.headers())
        return response


def build_v2_router(v2: V2Handlers) -> APIRouter:
    """The V2 routes; ``infer`` here runs only with the fast path off."""
    registry, settings = v2.registry, v2.settings
    router = APIRouter(
        prefix="/v2", tags=["v2 (Open Inference Protocol)"], responses=V2_ERROR_RESPONSES
    )

    resolve = v2.resolve

    def metadata(model: str, table: ServedTable, sequences: bool) -> dict[str, Any]:
        ids_shape = [-1, -1] if sequences else [-1]
        outputs = [{"name": "embeddings", "datatype": "FP32", "shape": [*ids_shape, table.dim]}]
        if sequences:
            outputs.append({"name": "mask", "datatype": "BOOL", "shape": ids_shape})
        return {
            "name": model,
            "versions": [MODEL_VERSION],
            "platform": "embedding_lookup",
            "inputs": [{"name": "ids", "datatype": "INT64", "shape": ids_shape}],
            "outputs": outputs,
        }

    @router.get("")
    async def server_metadata() -> Response:
        """Server metadata."""
        return _json(
            {
                "name": "embedding-service",
                "version": __version__,
                "extensions": ["binary_tensor_data"],
            }
        )

    @router.get("/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @router.get("/health/ready")
    async def ready() -> Response:
        state, _ = registry.status()
        return _json({"ready": state == "ready"}, 200 if state == "ready" else 503)

    @router.get("/models/{model}")
    @router.get("/models/{model}/versions/{version}")
    async def model_metadata(model: str, version: str | None = None) -> Response:
        table, sequences = resolve(model, version)
        return _json(metadata(model, table, sequences))

    @router.get("/models/{model}/ready")
    @router.get("/models/{model}/versions/{version}/ready")
    async def model_ready(model: str, version: str | None = None) -> Response:
        table, _ = resolve(model, version)
        return _json(
            {"name": model, "ready": table.batcher.healthy}, 200 if table.batcher.healthy else 503
        )

    @router.post("/models/{model}/infer")
    @router.post("/models/{model}/versions/{version}/infer")
    async def infer(model: str, request: Request, version: str | None = None) -> Response:
        """Infer, JSON or with the binary tensor data extension both ways."""
        body = await read_body(request.receive, settings.max_body_bytes)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
        return _encoded(await v2.infer(model, body, headers, version))

    return router
