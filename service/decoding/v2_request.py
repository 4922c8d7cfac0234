"""Open Inference Protocol (KServe V2) infer requests, JSON and binary tensor extension.

With the binary extension the body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by the raw tensors, each input saying its size in
``parameters.binary_data_size`` (in input order), as tritonclient writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.decoding.ids import as_int64_ids, body_may_hold_booleans, ids_array
from service.decoding.shapes import check_dims, check_id_count
from service.errors import InvalidBody, InvalidIds, InvalidRequest

ID_DATATYPES: dict[str, np.dtype[Any]] = {"INT64": np.dtype("<i8"), "INT32": np.dtype("<i4")}


@dataclass
class V2InferRequest:
    """Ids of one infer call and how each output should come back."""

    ids: np.ndarray
    request_id: str | None = None
    outputs: list[str] = field(default_factory=list)  # empty: every output of the model
    binary: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False

    def wants_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def decode_v2_infer(
    body: bytes, header_length: str | None, max_ids: int, output_names: tuple[str, ...]
) -> V2InferRequest:
    """Parse an infer body; ``output_names`` are the outputs the model has."""
    header, binary = _split_body(body, header_length)
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"inference header is not valid JSON: {exc}") from None
    if type(request) is not dict:
        raise InvalidRequest("the inference request must be a JSON object")
    inputs = request.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        raise InvalidRequest("exactly one input, named 'ids', is expected")
    tensor = inputs[0]
    if tensor.get("name") != "ids":
        raise InvalidRequest(f"unknown input {tensor.get('name')!r}; the model's input is 'ids'")
    datatype = tensor.get("datatype")
    if datatype not in ID_DATATYPES:
        raise InvalidRequest(f"input 'ids' must be INT64 or INT32, not {datatype!r}")
    shape = tensor.get("shape")
    if type(shape) is not list or any(type(d) is not int or d < 0 for d in shape):
        raise InvalidRequest("input 'ids' needs a shape of non-negative integers")
    # Exact Python ints, each dimension capped: [0, 2**62, 2**62] holds no id but would
    # still make numpy fail (or wrap around) when reshaping.
    count = check_dims(shape, "the shape of input 'ids'", max_ids)
    check_id_count(count, max_ids)
    parameters = _object(tensor.get("parameters"), "input parameters")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        dtype = ID_DATATYPES[datatype]
        if type(size) is not int or size != count * dtype.itemsize or size > len(binary):
            raise InvalidBody(
                f"binary_data_size {size} does not match shape {shape} of {datatype} "
                f"({count * dtype.itemsize} bytes, {len(binary)} received)"
            )
        ids = np.frombuffer(binary[:size], dtype=dtype).reshape(shape).astype(np.int64)
    elif "data" in tensor:
        flat = ids_array(tensor["data"], check_booleans=body_may_hold_booleans(header))
        if flat.size != count:
            raise InvalidIds(
                f"input 'ids' holds {flat.size} values, its shape {shape} needs {count}"
            )
        ids = as_int64_ids(flat).reshape(shape)
    else:
        raise InvalidRequest("input 'ids' has neither 'data' nor binary_data_size")
    outputs, binary_flags = _requested_outputs(request.get("outputs"), output_names)
    request_parameters = _object(request.get("parameters"), "parameters")
    return V2InferRequest(
        ids=ids,
        request_id=request.get("id") if isinstance(request.get("id"), str) else None,
        outputs=outputs,
        binary=binary_flags,
        binary_default=bool(request_parameters.get("binary_data_output", False)),
    )


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor bytes after it."""
    if header_length is None:
        return body, b""
    try:
        split = int(header_length)
    except ValueError:
        raise InvalidBody("Inference-Header-Content-Length is not an integer") from None
    if not 0 <= split <= len(body):
        raise InvalidBody("Inference-Header-Content-Length exceeds the body")
    return body[:split], body[split:]


def _object(value: Any, what: str) -> dict[str, Any]:
    """A V2 ``parameters`` member: absent/null or a JSON object."""
    if value is None:
        return {}
    if type(value) is not dict:
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def _requested_outputs(outputs: Any, names: tuple[str, ...]) -> tuple[list[str], dict[str, bool]]:
    if outputs is None:
        return [], {}
    if type(outputs) is not list:
        raise InvalidRequest("'outputs' must be a list")
    chosen, binary = [], {}
    for output in outputs:
        name = output.get("name") if type(output) is dict else None
        if name not in names:
            raise InvalidRequest(f"unknown output {name!r}; the model has {', '.join(names)}")
        if name in binary:  # each output is computed once; a repeat would multiply the response
            raise InvalidRequest(f"output {name!r} is requested twice")
        chosen.append(name)
        binary[name] = bool(
            _object(output.get("parameters"), "output parameters").get("binary_data", False)
        )
    return chosen, binary
