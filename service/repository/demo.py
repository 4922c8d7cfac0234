"""The built-in demo tables, written when the model repository holds no table.

``demo`` (.npy, 100,000 x 64, mask_zero) and ``demo_onnx`` (the same rows as an
ONNX Gather graph shaped like a ``torch.onnx.export`` of ``nn.Embedding``), so a
new user sees both load paths at once. Deterministic: seed 0, row 0 all zeros.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from service.backends.ort_gather import ONNX_IR_VERSION, ONNX_OPSET

log = logging.getLogger(__name__)

DEMO_ROWS = 100_000
DEMO_DIM = 64
# Every demo table's options (the file demo, `dev.py redis`, compose's Redis demo): row 0 pads.
DEMO_OPTIONS = "# Demo table: row 0 is the padding row (Keras mask_zero).\nmask_zero = true\n"


def demo_table(rows: int = DEMO_ROWS, dim: int = DEMO_DIM) -> np.ndarray:
    """The deterministic demo weights (row 0 is the padding row: zeros)."""
    table = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    table *= np.float32(0.1)
    table[0] = 0.0
    return table


def gather_onnx_model(table: np.ndarray, input_name: str = "input_ids") -> bytes:
    """An ONNX graph ``output = Gather(weight, input_ids)`` with the table inline."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["weight", input_name], ["embeddings"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info(input_name, TensorProto.INT64, ["batch", "sequence"])],
        [
            helper.make_tensor_value_info(
                "embeddings", TensorProto.FLOAT, ["batch", "sequence", table.shape[1]]
            )
        ],
        initializer=[
            helper.make_tensor("weight", TensorProto.FLOAT, table.shape, table.tobytes(), raw=True)
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION
    )
    data: bytes = model.SerializeToString()  # protobuf's Message has no stubs here
    return data


def _shared_file_mode() -> int:
    """``0o666`` less the process umask: what ``open()`` would give (0644 under umask 022)."""
    umask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomically(path: Path, data: bytes) -> None:
    # Several workers may start at once: write beside, then rename into place. mkstemp makes
    # its file 0600; the demo must be readable by a container's user, as np.save's would be.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, _shared_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_demo_tables(folder: Path, rows: int = DEMO_ROWS, dim: int = DEMO_DIM) -> list[Path]:
    """Write ``demo.npy`` + ``demo.toml`` and ``demo_onnx.onnx`` + ``demo_onnx.toml`` into
    ``folder``, which must exist (a mistyped path is an error, never a new folder)."""
    import io

    table = demo_table(rows, dim)
    buffer = io.BytesIO()
    np.save(buffer, table)
    written = [folder / "demo.npy", folder / "demo_onnx.onnx"]
    _write_atomically(written[0], buffer.getvalue())
    _write_atomically(written[1], gather_onnx_model(table))
    for name in ("demo", "demo_onnx"):
        _write_atomically(folder / f"{name}.toml", DEMO_OPTIONS.encode())
    log.info("no table in %s: wrote the demo tables %s", folder, ", ".join(p.name for p in written))
    return written


def main(argv: list[str]) -> int:
    """``python -m service.repository.demo FOLDER``: write the demo tables (the image build)."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m service.repository.demo EXISTING_FOLDER", file=sys.stderr)
        return 2
    write_demo_tables(Path(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
