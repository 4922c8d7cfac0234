"""Loads ``.onnx`` tables: finds the ``Gather`` of an initializer by the graph's id input.

Only the table is taken from the file; the service then serves it through its
own canonical gather (ORT or numpy), so any rank of ids works whatever input
shape the exporter fixed. External-data tables (over 2 GB) are memory-mapped
from their data file, never read into memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.errors import TableLoadError
from service.repository.weights import TableWeights, check_finite, check_servable, file_version

# Ops that pass the ids (or the gathered rows) through unchanged in meaning.
_PASS_THROUGH = {"Cast", "Identity"}
_INTEGER_TYPES = {
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.UINT16,
    TensorProto.UINT32,
    TensorProto.UINT64,
}


def load_onnx(path: Path) -> TableWeights:
    """Extract the embedding table of an exported ``nn.Embedding`` / Keras ``Embedding``."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError as exc:
        raise TableLoadError(f"{path}: file not found") from exc
    except Exception as exc:  # onnx raises DecodeError and friends for garbage input
        raise TableLoadError(f"{path}: not a valid ONNX model: {exc}") from exc
    graph = model.graph
    tensor = _find_gathered_table(graph, path)
    array = _tensor_array(tensor, path)
    files = [path]
    region = None
    if isinstance(array, np.memmap):
        assert array.filename is not None  # _tensor_array maps external data from its file
        files.append(Path(array.filename))
        region = (Path(array.filename).resolve(), int(array.offset))
    array = check_servable(array, path)
    check_finite(array, path)
    return TableWeights(array, "onnx", path, file_version(*files), region)


def _find_gathered_table(graph: onnx.GraphProto, path: Path) -> TensorProto:
    initializers: dict[str, TensorProto] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    initializers.setdefault(node.output[0], attr.t)
    graph_inputs = {i.name: i for i in graph.input if i.name not in initializers}
    producers = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) != 2:
            continue
        data, indices = node.input
        if data not in initializers:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis != 0:
            continue
        source = _trace_back(indices, producers)
        if source not in graph_inputs:
            continue
        elem_type = graph_inputs[source].type.tensor_type.elem_type
        passes_cast = source != indices
        if elem_type not in _INTEGER_TYPES and not passes_cast:
            continue
        if not _reaches_output(node.output[0], consumers, outputs):
            raise TableLoadError(
                f"{path}: the Gather of '{data}' is followed by other operations; "
                "only a plain embedding lookup graph can be served"
            )
        return initializers[data]
    renorm = _in_graph_renorm(graph, initializers, producers)
    if renorm is not None:
        raise TableLoadError(f"{path}: {renorm}")
    raise TableLoadError(
        f"{path}: no Gather of an initializer by the graph's integer input was found"
    )


_NORM_OPS = {"ReduceL1": "1.0", "ReduceL2": "2.0"}


def _in_graph_renorm(
    graph: onnx.GraphProto,
    initializers: dict[str, TensorProto],
    producers: dict[str, onnx.NodeProto],
) -> str | None:
    """How to export instead, when the graph rescales rows itself before its Gather.

    ``torch.onnx.export(..., dynamo=True)`` of ``nn.Embedding(max_norm=...)`` writes torch's
    in-place ``embedding_renorm_`` into the graph: ``Unique`` of the ids, the rows' norms,
    a ``ScatterND`` of the rescaled rows into the weight, then the ``Gather``. The service
    serves the stored weight and applies ``max_norm`` itself (torch's arithmetic).
    """
    scatter = next(
        (
            producers[node.input[0]]
            for node in graph.node
            if node.op_type == "Gather"
            and node.input
            and node.input[0] in producers
            and producers[node.input[0]].op_type == "ScatterND"
        ),
        None,
    )
    if scatter is None or scatter.input[0] not in initializers:
        return None
    options = []
    greater = next((n for n in graph.node if n.op_type == "Greater"), None)
    if greater is not None and greater.input[1] in initializers:
        max_norm = float(numpy_helper.to_array(initializers[greater.input[1]]).reshape(-1)[0])
        options.append(f"max_norm = {max_norm:g}")
    reduce = next((n for n in graph.node if n.op_type in _NORM_OPS), None)
    power = next((n for n in graph.node if n.op_type == "Pow" and n.input[1] in initializers), None)
    if reduce is not None:
        options.append(f"norm_type = {_NORM_OPS[reduce.op_type]}")
    elif power is not None:
        norm_type = float(numpy_helper.to_array(initializers[power.input[1]]).reshape(-1)[0])
        options.append("norm_type = inf" if np.isinf(norm_type) else f"norm_type = {norm_type:g}")
    settings = ", ".join(options) or "max_norm = ..., norm_type = ..."
    return (
        "the graph renormalises the table before its Gather (Unique/ScatterND: torch.onnx.export "
        "with dynamo=True of nn.Embedding(max_norm=...)), which the service does not run: export "
        "with torch.onnx.export(..., dynamo=False) (a plain Gather) or save the weight as .npy "
        f"(np.save), and put {settings} in its .toml"
    )


def _trace_back(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    seen = 0
    while name in producers and producers[name].op_type in _PASS_THROUGH and seen < 16:
        name = producers[name].input[0]
        seen += 1
    return name


def _reaches_output(
    name: str, consumers: dict[str, list[onnx.NodeProto]], outputs: set[str]
) -> bool:
    for _ in range(16):
        if name in outputs:
            return True
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != "Identity":
            return False
        name = users[0].output[0]
    return False


def _tensor_array(tensor: TensorProto, path: Path) -> np.ndarray:
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except Exception as exc:
        raise TableLoadError(f"{path}: unsupported table element type {tensor.data_type}") from exc
    shape = tuple(int(d) for d in tensor.dims)
    if tensor.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        base = path.parent.resolve()
        data_file = (base / location).resolve()
        # External data must live beside the model, never elsewhere on the host.
        if not location or not data_file.is_relative_to(base):
            raise TableLoadError(
                f"{path}: external data location {location!r} resolves to {data_file}, outside "
                f"the model's folder {base}; refused"
            )
        offset = int(info.get("offset", 0))
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not data_file.is_file() or data_file.stat().st_size < offset + nbytes:
            raise TableLoadError(f"{path}: external data file {location!r} missing or truncated")
        return np.memmap(
            data_file, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=shape
        )
    if tensor.HasField("raw_data") or tensor.raw_data:
        raw = tensor.raw_data
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(raw) != expected:
            raise TableLoadError(f"{path}: initializer holds {len(raw)} bytes, expected {expected}")
        # A view of the protobuf's bytes: no second copy of the table.
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return numpy_helper.to_array(tensor)
