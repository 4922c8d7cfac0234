"""Open Inference Protocol (KServe V2) models: each table is a model.

Input ``ids`` (INT64/INT32, any shape) -> output ``embeddings`` (FP32, ``ids.shape + [dim]``).
``{table}.sequences`` is the same table with Keras/torch masking: input ``ids`` of shape
``[B, L]`` (already padded), outputs ``embeddings`` (zeros at masked positions) and ``mask``
(BOOL ``[B, L]``, false where the id is the table's padding id).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from service import __version__
from service.decoding.ids import check_in_range
from service.decoding.shapes import check_output_bytes
from service.decoding.v2_request import V2InferRequest
from service.errors import TableNotFound
from service.results import Document, Inference, Tensor, Timing
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable
from service.usecases.gather import RowText, uses_row_text
from service.usecases.plan import FinalRows, Plan, Ready

SEQUENCES_SUFFIX = ".sequences"
MODEL_VERSION = "1"


class V2Model(NamedTuple):
    """A V2 model: the table behind it, and whether it is the ``.sequences`` variant."""

    table: ServedTable
    sequences: bool


def resolve_model(registry: TableRegistry, model: str, version: str | None = None) -> V2Model:
    """The table behind ``model`` at ``version`` (a version or a label; None: the default),
    and whether it is the ``.sequences`` variant. A flat table's one version is also
    ``"1"`` (V2's version of a model with one)."""
    name, sequences = model, False
    if not registry.has(model) and model.endswith(SEQUENCES_SUFFIX):
        name, sequences = model[: -len(SEQUENCES_SUFFIX)], True
    if not registry.has(name):
        registry.check_not_failed(model)  # failed is not missing: 503 table_unavailable
        registry.check_not_failed(name)
        raise TableNotFound(f"unknown model {model!r}")
    if version == MODEL_VERSION and not registry.versioned(name):
        version = None
    return V2Model(registry.get(name, version), sequences)


def v2_versions(registry: TableRegistry, name: str) -> list[str]:
    """The versions V2 lists for table ``name``: its served versions, ``["1"]`` when flat."""
    return registry.versions(name).versions() if registry.versioned(name) else [MODEL_VERSION]


def v2_version(registry: TableRegistry, table: ServedTable) -> str:
    """The V2 version of one served table: its version, ``"1"`` for a flat table."""
    return table.served_version if registry.versioned(table.name) else MODEL_VERSION


def output_names(sequences: bool) -> tuple[str, ...]:
    """The outputs a model has."""
    return ("embeddings", "mask") if sequences else ("embeddings",)


def _embeddings(table: ServedTable, ids: np.ndarray, binary: bool, timing: Timing) -> Plan[Tensor]:
    """The ``embeddings`` output of ``ids`` (-1: zero vector), shaped ``ids.shape + [dim]``."""
    flat = ids.reshape(-1)
    shape = (*ids.shape, table.dim)
    tensor = Tensor("embeddings", "FP32", shape, binary)

    def text_done(text: bytes) -> Tensor:
        tensor.text = text
        return tensor

    if not binary and uses_row_text(table, "float", "float32"):
        return RowText(table, flat, shape, timing, flat=True).then(text_done)
    filled = flat >= 0
    if filled.all():
        rows_plan: Plan[np.ndarray] = FinalRows(table, flat, "float32", timing)
    else:
        rows = np.zeros((flat.size, table.dim), np.float32)

        def fill(found: np.ndarray) -> np.ndarray:
            rows[filled] = found
            return rows

        if filled.any():
            rows_plan = FinalRows(table, flat[filled], "float32", timing).then(fill)
        else:
            rows_plan = Ready(rows)

    def rows_done(found: np.ndarray) -> Tensor:
        tensor.array = found.reshape(shape)
        return tensor

    return rows_plan.then(rows_done)


def infer(
    table: ServedTable,
    sequences: bool,
    model: str,
    call: V2InferRequest,
    max_output_bytes: int,
    version: str = MODEL_VERSION,
) -> Plan[Inference]:
    """``embeddings`` (and ``mask`` for ``.sequences``) of the call's ids; ``version``: the
    model version the answer names."""
    ids = call.ids
    check_in_range(ids, table.rows)
    check_output_bytes(ids.size, table.dim, 4, max_output_bytes)
    result = Inference(model, version, call.request_id, [])
    wanted = call.outputs or list(output_names(sequences))
    mask = None
    if sequences and table.pad_id is not None:
        mask = ids != table.pad_id
        ids = np.where(mask, ids, -1)
    elif sequences:
        mask = np.ones(ids.shape, bool)
    embeddings: Plan[Tensor | None] = Ready(None)
    if "embeddings" in wanted:  # one gather, whichever outputs ask for it
        embeddings = _embeddings(table, ids, call.wants_binary("embeddings"), result.timing)

    def outputs(tensor: Tensor | None) -> Inference:
        for name in wanted:
            if name == "mask":
                assert mask is not None
                result.outputs.append(
                    Tensor("mask", "BOOL", mask.shape, call.wants_binary(name), mask)
                )
            else:
                assert tensor is not None
                result.outputs.append(tensor)
        return result

    return embeddings.then(outputs)


def model_metadata(registry: TableRegistry, model: str, resolved: V2Model) -> Document:
    """A model's inputs and outputs; ``versions``: every version served."""
    table, sequences = resolved
    ids_shape = [-1, -1] if sequences else [-1]
    outputs = [{"name": "embeddings", "datatype": "FP32", "shape": [*ids_shape, table.dim]}]
    if sequences:
        outputs.append({"name": "mask", "datatype": "BOOL", "shape": ids_shape})
    payload: dict[str, Any] = {
        "name": model,
        "versions": v2_versions(registry, table.name),
        "platform": "embedding_lookup",
        "inputs": [{"name": "ids", "datatype": "INT64", "shape": ids_shape}],
        "outputs": outputs,
    }
    return Document(payload)


def model_ready(model: str, resolved: V2Model) -> Document:
    """Whether a model's (version's) batch worker is alive."""
    table, _ = resolved
    healthy = table.batcher.healthy
    return Document({"name": model, "ready": healthy}, 200 if healthy else 503)


def server_metadata() -> Document:
    """V2 server metadata."""
    return Document(
        {"name": "embedding-service", "version": __version__, "extensions": ["binary_tensor_data"]}
    )


def server_ready(registry: TableRegistry) -> Document:
    """V2 readiness: every table loaded and every batch worker alive."""
    state, _ = registry.status()
    return Document({"ready": state == "ready"}, 200 if state == "ready" else 503)
