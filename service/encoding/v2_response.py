"""Open Inference Protocol (KServe V2) infer responses: JSON data, or binary tensors appended."""

from __future__ import annotations

from typing import cast

import numpy as np
import orjson
from typing_extensions import Buffer

from service.decoding.body import JSON, OCTET_STREAM
from service.encoding.responses import EncodedResponse, as_bytes_view
from service.results import Inference


def encode_inference(result: Inference) -> EncodedResponse:
    """The V2 infer response of ``result``; JSON ``data`` from cached row text is spliced in
    as is (``orjson.Fragment``), byte-identical to encoding the array."""
    entries = []
    tails: list[np.ndarray] = []
    for output in result.outputs:
        entry: dict[str, object] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        if output.text is not None:
            entry["data"] = orjson.Fragment(output.text)
        else:
            array = np.ascontiguousarray(output.array)
            if output.binary:
                raw = as_bytes_view(array.astype(np.uint8) if array.dtype == np.bool_ else array)
                entry["parameters"] = {"binary_data_size": raw.nbytes}
                tails.append(raw)
            else:
                entry["data"] = array.reshape(-1)
        entries.append(entry)
    payload: dict[str, object] = {
        "model_name": result.model,
        "model_version": result.version,
        "outputs": entries,
    }
    if result.request_id is not None:
        payload["id"] = result.request_id
    header = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    timing = result.timing.headers()
    if not tails:
        return EncodedResponse(header, JSON, headers=timing)
    return EncodedResponse(
        # The one copy of the tensors, straight into the body (the cast: see as_bytes_view).
        b"".join([header, *cast("list[Buffer]", tails)]),
        OCTET_STREAM,
        headers={"inference-header-content-length": str(len(header)), **timing},
    )
