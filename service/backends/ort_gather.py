"""onnxruntime gather on the CPU or CUDA execution provider.

Every table, whatever file it came from, is served through one canonical graph,
``rows = Gather(table, ids)`` with 1-D int64 ids. When the rows lie byte for
byte in a file (``.npy`` payload, ONNX external data), the graph names that file
region as external data and ORT maps it on the CPU instead of copying it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from service.backends.base import GatherableRows
from service.backends.ort_runtime import (
    NOT_INSTALLED,
    CudaUnavailable,
    cuda_load_failure,
    onnxruntime_module,
    preload_cuda_libraries,
)
from service.backends.placement import CUDA_PROVIDER, max_run_ids

log = logging.getLogger(__name__)

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


def _closed(*_: object) -> Any:
    raise RuntimeError("this onnxruntime backend is closed")


class OrtGatherBackend:
    """One onnxruntime session running the canonical gather graph.

    On CUDA, gathers larger than one run's share of the arena are split (``max_run_ids``);
    a session whose CUDA provider did not load raises ``CudaUnavailable``.
    """

    name = "onnxruntime"
    inline_safe = False

    def __init__(
        self,
        weights: GatherableRows,
        device: str = "cpu",
        gpu_mem_limit: int | None = None,
    ) -> None:
        ort = onnxruntime_module()
        if ort is None:
            raise RuntimeError(NOT_INSTALLED)
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
        on_cuda = device.startswith("cuda")
        if on_cuda:
            preload_cuda_libraries()
        printed = io.StringIO()
        # A CUDA session that fails to build is built again on the CPU, the error printed.
        with contextlib.redirect_stdout(printed) if on_cuda else contextlib.nullcontext():
            session = ort.InferenceSession(
                model_bytes, options, providers=_providers(device, gpu_mem_limit)
            )
        if on_cuda and CUDA_PROVIDER not in session.get_providers():
            del session  # onnxruntime made it on the CPU: say why, keep nothing
            raise CudaUnavailable(f"onnxruntime did not enable {CUDA_PROVIDER}: {_why(printed)}")
        # run() would otherwise rebuild the session on the CPU after a CUDA failure, and the
        # table would say cuda:N while running on the CPU: let the failure be an error.
        session.disable_fallback()
        self._session: Any = session
        self._run = session.run
        self._weights = weights  # for move_to_cpu (the served table keeps them anyway)
        self._file = _file_identity(weights)  # the file the session maps, as it was then
        self._gpu_mem_limit = gpu_mem_limit  # for move_back
        # The CUDA device move_to_cpu took this backend off (None: where it was built), and
        # why moving it back failed (None: not tried, or it moved back).
        self.moved_from: str | None = None
        self.move_back_failure: str | None = None
        row_bytes = weights.dim * weights.array.dtype.itemsize
        self.max_run_ids = max_run_ids(row_bytes) if on_cuda else None
        self._row = (weights.dim, weights.array.dtype)

    def gather(self, ids: np.ndarray) -> np.ndarray:
        step = self.max_run_ids
        if step is None or len(ids) <= step:
            rows: np.ndarray = self._run(None, {"ids": ids})[0]  # onnxruntime has no types
            return rows
        dim, dtype = self._row
        out = np.empty((len(ids), dim), dtype)
        for start in range(0, len(ids), step):
            out[start : start + step] = self._run(None, {"ids": ids[start : start + step]})[0]
        return out

    def move_to_cpu(self) -> None:
        """Keep serving from a CPU session and give the GPU memory back: a reload whose new
        version fits only in the room this one holds. Gathers running finish on the old
        session; later ones use the new (one attribute swap)."""
        if not self.device.startswith("cuda"):
            return
        cpu = type(self)(self._own_rows(), "cpu")
        self.moved_from, self.move_back_failure = self.device, None
        self._swap(cpu)

    def move_back(self) -> None:
        """Serve from the CUDA device ``move_to_cpu`` took this backend off again (the reload
        that needed its room failed). Raises what building the CUDA session raised (it
        serves on from the CPU then, and ``move_back_failure`` says why)."""
        if self.moved_from is None:
            return
        try:
            gpu = type(self)(self._own_rows(), self.moved_from, self._gpu_mem_limit)
        except Exception as exc:
            self.move_back_failure = str(exc) or repr(exc)
            raise
        self.moved_from, self.move_back_failure = None, None
        self._swap(gpu)

    def _own_rows(self) -> GatherableRows:
        """This version's rows for a new session: from its file when that is still the one
        mapped, else inline from the mapping (a reload renames a new file over the old name:
        a session built from the name would serve the new version's rows)."""
        weights = self._weights
        if weights.file_region is None or _file_identity(weights) == self._file:
            return weights
        log.info(
            "%s was replaced: a new session of its old rows gets them inline",
            weights.file_region[0],
        )
        return _InlineRows(weights.array, weights.rows, weights.dim)

    def _swap(self, other: OrtGatherBackend) -> None:
        """Run ``other``'s session from now on (one attribute swap per field: gathers
        running finish on the old session)."""
        if other.max_run_ids is not None:  # to CUDA: gathers split before they reach it
            self.max_run_ids = other.max_run_ids
        self._run, self._session = other._run, other._session
        self.max_run_ids, self.device = other.max_run_ids, other.device

    def close(self) -> None:
        """Drop the session now (its GPU memory with it): the bound ``run`` held it too."""
        self._run = _closed
        self._session = None


def _providers(device: str, gpu_mem_limit: int | None) -> list[Any]:
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    cuda_options = {
        "device_id": str(int(device.partition(":")[2] or 0)),
        # Grow the arena by what is asked for, not in doubling chunks, and bound it,
        # so several tables share one GPU predictably.
        "arena_extend_strategy": "kSameAsRequested",
    }
    if gpu_mem_limit is not None:
        cuda_options["gpu_mem_limit"] = str(gpu_mem_limit)
    return [(CUDA_PROVIDER, cuda_options), "CPUExecutionProvider"]


def _why(printed: io.StringIO) -> str:
    """Why a CUDA session came up without the provider: the library that did not load, or
    the error onnxruntime printed when it built the session again on the CPU."""
    failure = cuda_load_failure()
    if failure:
        return failure
    errors = [line for line in printed.getvalue().splitlines() if line.startswith("EP Error")]
    return errors[0] if errors else "see the onnxruntime log for the provider error"


@dataclass(frozen=True)
class _InlineRows:
    """Rows handed to a session inline (no file region): a probe's, or a table's whose file
    was replaced since its session was built."""

    array: np.ndarray
    rows: int
    dim: int
    file_region: tuple[Path, int] | None = None


def _file_identity(weights: GatherableRows) -> tuple[int, int, int, int] | None:
    """What tells the file a session maps its rows from from another file later renamed
    over its name (None: rows inline, or the file is gone)."""
    if weights.file_region is None:
        return None
    try:
        stat = os.stat(weights.file_region[0])
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def cuda_session_failure(device: str = "cuda:0") -> str:
    """Why a CUDA session cannot gather on ``device`` here ("" when one does): the libraries
    may load and the session still fail (a driver older than the CUDA the wheel is built for)."""
    probe = _InlineRows(np.arange(2, dtype=np.float32).reshape(2, 1), rows=2, dim=1)
    try:
        backend = OrtGatherBackend(probe, device, None)
        backend.gather(np.array([1], dtype=np.int64))
    except Exception as exc:  # CudaUnavailable, or a CUDA error on the first run
        return str(exc)
    backend.close()
    return ""
