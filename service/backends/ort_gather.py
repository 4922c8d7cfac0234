"""onnxruntime gather on the CPU or CUDA execution provider.

Every table, whatever file it came from, is served through one canonical graph,
``rows = Gather(table, ids)`` with 1-D int64 ids. When the rows lie byte for
byte in a file (``.npy`` payload, ONNX external data), the graph names that file
region as external data and ORT maps it on the CPU instead of copying it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from service.backends.base import GatherableRows

# onnxruntime 1.31 refuses IR versions above what it knows; the newest onnx writes 13+.
ONNX_IR_VERSION = 10
ONNX_OPSET = 13

_ELEM_TYPES = {
    np.dtype("float16"): TensorProto.FLOAT16,
    np.dtype("float32"): TensorProto.FLOAT,
    np.dtype("float64"): TensorProto.DOUBLE,
}


def build_gather_model(weights: GatherableRows) -> tuple[bytes, Path | None]:
    """The canonical gather graph; returns it serialised and the folder its data lies in."""
    rows, dim = weights.rows, weights.dim
    elem = _ELEM_TYPES[weights.array.dtype]
    table = TensorProto(name="table", data_type=elem, dims=[rows, dim])
    folder: Path | None = None
    if weights.file_region is not None:
        data_file, offset = weights.file_region
        folder = data_file.parent
        table.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", data_file.name),
            ("offset", str(offset)),
            ("length", str(rows * dim * weights.array.dtype.itemsize)),
        ):
            entry = table.external_data.add()
            entry.key, entry.value = key, value
    else:
        # No file region: hand the bytes over inline (ORT keeps its own copy).
        table.raw_data = np.ascontiguousarray(weights.array).tobytes()
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "embedding_gather",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("rows", elem, ["n", dim])],
        initializer=[table],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="embedding-service",
    )
    return model.SerializeToString(), folder


class OrtGatherBackend:
    """One onnxruntime session running the canonical gather graph."""

    name = "onnxruntime"
    inline_safe = False

    def __init__(
        self,
        weights: GatherableRows,
        device: str = "cpu",
        gpu_mem_limit: int | None = None,
    ) -> None:
        self.device = device
        model_bytes, folder = build_gather_model(weights)
        options = ort.SessionOptions()
        # A gather is memory-bound and tiny per call: one thread, no spinning pool
        # eating a core the HTTP workers need.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        if folder is not None:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", str(folder)
            )
        providers: list[str | tuple[str, dict[str, str]]]
        if device.startswith("cuda"):
            device_id = int(device.partition(":")[2] or 0)
            cuda_options = {
                "device_id": str(device_id),
                # Grow the arena by what is asked for, not in doubling chunks, and bound it,
                # so several tables share one GPU predictably.
                "arena_extend_strategy": "kSameAsRequested",
            }
            if gpu_mem_limit is not None:
                cuda_options["gpu_mem_limit"] = str(gpu_mem_limit)
            providers = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(model_bytes, options, providers=providers)
        if (
            device.startswith("cuda")
            and "CUDAExecutionProvider" not in self._session.get_providers()
        ):
            raise RuntimeError("onnxruntime did not enable CUDAExecutionProvider for this session")
        self._run = self._session.run

    def gather(self, ids: np.ndarray) -> np.ndarray:
        rows: np.ndarray = self._run(None, {"ids": ids})[0]  # onnxruntime has no types
        return rows

    def close(self) -> None:
        self._session = None
