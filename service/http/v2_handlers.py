"""What the V2 (Open Inference Protocol) routes run: the model resolver, the infer body
decoder and plan, metadata and readiness."""

from __future__ import annotations

from collections.abc import Mapping

from service.decoding.v2_request import V2InferRequest, decode_v2_infer
from service.errors import ServiceError
from service.http.call import Call
from service.metrics import UNKNOWN_TABLE
from service.results import Document, Inference
from service.tables.registry import TableRegistry
from service.usecases import infer
from service.usecases.plan import Plan


def resolve_model(call: Call) -> None:
    """The model (and table) named by the path, at its version if the path names one."""
    call.table_label = UNKNOWN_TABLE
    model = infer.resolve_model(
        call.services.registry, call.params["model"], call.params.get("version")
    )
    call.model = model
    call.use_table(model.table)


def model_gathers_inline(params: Mapping[str, str], registry: TableRegistry) -> bool:
    """The table behind the path's model gathers in the caller's stack (the direct lane may
    answer); a missing model is left to the ASGI path, which answers the error."""
    try:
        model = infer.resolve_model(registry, params["model"], params.get("version"))
    except ServiceError:
        return False
    return model.table.batcher.inline


def infer_body(call: Call) -> V2InferRequest:
    """The infer body (JSON or binary tensors); outputs checked against the model's."""
    header_length = call.headers.get("inference-header-content-length")
    limit = call.services.settings.max_ids
    outputs = infer.output_names(call.served_model().sequences)
    return decode_v2_infer(call.body, header_length, limit, outputs)


def plan_infer(call: Call, request: V2InferRequest) -> Plan[Inference]:
    """The infer plan: ``embeddings`` (and ``mask`` for ``.sequences``)."""
    table, sequences = call.served_model()
    limit = call.services.settings.max_output_bytes
    version = infer.v2_version(call.services.registry, table)
    return infer.infer(table, sequences, call.params["model"], request, limit, version)


async def server_metadata(call: Call, _: None) -> Document:
    """V2 server metadata."""
    return infer.server_metadata()


async def live(call: Call, _: None) -> Document:
    """V2 server liveness: the process serves."""
    return Document({"live": True})


async def ready(call: Call, _: None) -> Document:
    """V2 server readiness."""
    return infer.server_ready(call.services.registry)


async def model_metadata(call: Call, _: None) -> Document:
    """A model's inputs and outputs, and its served versions."""
    return infer.model_metadata(call.services.registry, call.params["model"], call.served_model())


async def model_ready(call: Call, _: None) -> Document:
    """Whether a model's (version's) batch worker is alive."""
    return infer.model_ready(call.params["model"], call.served_model())
