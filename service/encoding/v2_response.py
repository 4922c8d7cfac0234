"""Open Inference Protocol (KServe V2) infer responses: JSON data, or binary tensors appended."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from service.decoding.body import JSON, OCTET_STREAM
from service.encoding.responses import EncodedResponse, as_bytes_view

V2_DATATYPES = {np.dtype("float32"): "FP32", np.dtype("float16"): "FP16", np.dtype("bool"): "BOOL"}


@dataclass
class V2Output:
    name: str
    array: np.ndarray
    binary: bool


def v2_infer_response(
    model: str, version: str, request_id: str | None, outputs: list[V2Output]
) -> EncodedResponse:
    """The response header, with each binary output's bytes appended in order."""
    entries = []
    tails: list[np.ndarray] = []
    for output in outputs:
        array = np.ascontiguousarray(output.array)
        entry: dict[str, object] = {
            "name": output.name,
            "datatype": V2_DATATYPES[array.dtype],
            "shape": list(array.shape),
        }
        if output.binary:
            raw = as_bytes_view(array.astype(np.uint8) if array.dtype == np.bool_ else array)
            entry["parameters"] = {"binary_data_size": raw.nbytes}
            tails.append(raw)
        else:
            entry["data"] = array.reshape(-1)
        entries.append(entry)
    payload: dict[str, object] = {"model_name": model, "model_version": version, "outputs": entries}
    if request_id is not None:
        payload["id"] = request_id
    header = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tails:
        return EncodedResponse(header, JSON)
    return EncodedResponse(
        b"".join([header, *tails]),  # the one copy of the tensors, straight into the body
        OCTET_STREAM,
        headers={"inference-header-content-length": str(len(header))},
    )
