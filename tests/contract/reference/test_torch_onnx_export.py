"""ONNX files from ``torch.onnx.export`` of ``nn.Embedding`` (both exporters) serve identical rows."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="reference extra (torch) not installed")

from service.errors import TableLoadError  # noqa: E402
from service.repository.onnx_loader import load_onnx  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402

pytestmark = pytest.mark.reference

ROWS, DIM = 300, 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("onnx") / "models"
    folder.mkdir()
    torch.manual_seed(0)
    module = torch.nn.Embedding(ROWS, DIM, padding_idx=0).eval()
    example = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.long)
    torch.onnx.export(
        module,
        (example,),
        str(folder / "legacy.onnx"),
        dynamo=False,
        input_names=["input_ids"],
        output_names=["embeddings"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}},
    )
    exporters = ["legacy"]
    try:
        torch.onnx.export(
            module,
            (example,),
            str(folder / "dynamo.onnx"),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},),
        )
        exporters.append("dynamo")
    except Exception as exc:  # pragma: no cover - reported, not hidden
        pytest.fail(f"the dynamo exporter failed: {exc!r}")
    weight = module.weight.detach().numpy().copy()
    return folder, weight, exporters


def test_loader_extracts_the_weight(exported) -> None:
    folder, weight, exporters = exported
    for name in exporters:
        loaded = load_onnx(folder / f"{name}.onnx")
        np.testing.assert_array_equal(loaded.array, weight)


def test_exported_files_serve_identical_rows(exported) -> None:
    folder, weight, exporters = exported
    ids = np.random.default_rng(1).integers(0, ROWS, size=(5, 7))
    with ServerProcess(folder) as server:
        server.wait_ready()
        import httpx

        for name in exporters:
            info = httpx.get(f"{server.url}/v1/tables/{name}").json()
            assert info["format"] == "onnx" and info["backend"] == "onnxruntime"
            body = httpx.post(
                f"{server.url}/v1/tables/{name}/lookup", json={"ids": ids.tolist()}
            ).json()
            np.testing.assert_array_equal(np.array(body["vectors"], dtype=np.float32), weight[ids])


@pytest.mark.parametrize(("max_norm", "norm_type"), [(1.5, 2.0), (0.5, 1.0), (1.0, 3.0)])
def test_dynamo_max_norm_graph_fails_saying_how_to_export(tmp_path, max_norm, norm_type) -> None:
    """dynamo=True writes torch's renorm (Unique/ScatterND) into the graph: refused, with the
    export that works and the options read from the graph."""
    module = torch.nn.Embedding(ROWS, DIM, max_norm=max_norm, norm_type=norm_type).eval()
    path = tmp_path / "renormed.onnx"
    torch.onnx.export(module, (torch.tensor([[1, 2, 3]]),), str(path), dynamo=True)
    with pytest.raises(TableLoadError) as error:
        load_onnx(path)
    message = str(error.value)
    assert str(path) in message and "dynamo=False" in message and ".npy" in message
    assert f"max_norm = {max_norm:g}" in message and f"norm_type = {norm_type:g}" in message


def test_legacy_max_norm_export_with_options_equals_torch(tmp_path) -> None:
    """dynamo=False writes a plain Gather (no renorm): with max_norm in the .toml, the service
    answers what the torch layer answers."""
    folder = tmp_path / "models"
    folder.mkdir()
    torch.manual_seed(3)
    module = torch.nn.Embedding(ROWS, DIM, max_norm=1.5).eval()
    with torch.no_grad():
        module.weight.mul_(3)  # most rows exceed max_norm
    weight = module.weight.detach().numpy().copy()
    torch.onnx.export(
        module, (torch.tensor([[1, 2, 3]]),), str(folder / "words.onnx"), dynamo=False
    )
    (folder / "words.toml").write_text("max_norm = 1.5\n")
    ids = np.arange(ROWS)
    with torch.no_grad():
        expected = module(torch.from_numpy(ids)).numpy()
    assert (expected != weight).any(axis=1).sum() > ROWS // 2
    with ServerProcess(folder) as server:
        server.wait_ready()
        import httpx

        response = httpx.post(
            f"{server.url}/v1/tables/words/lookup",
            json={"ids": ids.tolist()},
            headers={"Accept": "application/octet-stream"},
            timeout=60,
        )
        got = np.frombuffer(response.content, "<f4").reshape(ROWS, DIM)
    assert np.array_equal(got, expected)
