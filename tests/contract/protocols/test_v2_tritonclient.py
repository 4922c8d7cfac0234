"""Open Inference Protocol against the real tritonclient[http]: results equal table[ids]."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")


@pytest.fixture(scope="module")
def triton(server):
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield client
    client.close()


def test_server_ready_and_metadata(triton, tables) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("plain")
    meta = triton.get_model_metadata("plain")
    assert meta["inputs"][0]["name"] == "ids" and meta["inputs"][0]["datatype"] == "INT64"
    assert meta["outputs"][0] == {
        "name": "embeddings",
        "datatype": "FP32",
        "shape": [-1, tables["plain"].shape[1]],
    }
    seq = triton.get_model_metadata("keras.sequences")
    assert [o["name"] for o in seq["outputs"]] == ["embeddings", "mask"]
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("dtype", ["INT64", "INT32"])
@pytest.mark.parametrize("table_name", ["plain", "batched"])
def test_infer_equals_table_rows(triton, tables, binary_in, binary_out, dtype, table_name) -> None:
    table = tables[table_name]
    ids = (
        np.random.default_rng(3)
        .integers(0, len(table), size=(3, 5))
        .astype(np.int64 if dtype == "INT64" else np.int32)
    )
    inputs = [httpclient.InferInput("ids", list(ids.shape), dtype)]
    inputs[0].set_data_from_numpy(ids, binary_data=binary_in)
    outputs = [httpclient.InferRequestedOutput("embeddings", binary_data=binary_out)]
    result = triton.infer(table_name, inputs, outputs=outputs, request_id="r-1")
    got = result.as_numpy("embeddings")
    assert got.dtype == np.float32 and got.shape == (3, 5, table.shape[1])
    np.testing.assert_array_equal(got, table[ids])
    assert result.get_response()["id"] == "r-1"


def test_infer_without_requested_outputs_returns_binary(triton, tables) -> None:
    ids = np.array([1, 2, 3], dtype=np.int64)
    inputs = [httpclient.InferInput("ids", [3], "INT64")]
    inputs[0].set_data_from_numpy(ids)
    result = triton.infer("plain", inputs)  # tritonclient asks binary_data_output
    np.testing.assert_array_equal(result.as_numpy("embeddings"), tables["plain"][ids])


def test_sequences_model_mask(triton, tables) -> None:
    table = tables["keras"]  # mask_zero
    ids = np.array([[5, 9, 0], [7, 0, 0]], dtype=np.int64)
    inputs = [httpclient.InferInput("ids", [2, 3], "INT64")]
    inputs[0].set_data_from_numpy(ids, binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput("embeddings", binary_data=True),
        httpclient.InferRequestedOutput("mask", binary_data=False),
    ]
    result = triton.infer("keras.sequences", inputs, outputs=outputs)
    mask = result.as_numpy("mask")
    np.testing.assert_array_equal(mask, ids != 0)
    vectors = result.as_numpy("embeddings")
    np.testing.assert_array_equal(vectors[mask], table[ids[mask]])
    assert not vectors[~mask].any()


def test_v2_errors_use_v2_shape(server, triton) -> None:
    from tritonclient.utils import InferenceServerException

    inputs = [httpclient.InferInput("ids", [1], "INT64")]
    inputs[0].set_data_from_numpy(np.array([100000], dtype=np.int64))
    with pytest.raises(InferenceServerException, match="out of range"):
        triton.infer("plain", inputs)
    response = httpx.post(f"{server.url}/v2/models/nope/infer", json={"inputs": []})
    assert response.status_code == 404 and set(response.json()) == {"error"}
    bad = httpx.post(
        f"{server.url}/v2/models/plain/infer",
        json={"inputs": [{"name": "ids", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
    )
    assert bad.status_code == 422 and "INT64" in bad.json()["error"]
    assert httpx.get(f"{server.url}/v2/nothing").json().keys() == {"error"}
