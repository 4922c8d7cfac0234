"""The lookup and sequences routes of a real server: vectors equal ``table[ids]`` bit for bit."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

JSON = {"Content-Type": "application/json"}
BINARY_OUT = {"Content-Type": "application/json", "Accept": "application/octet-stream"}


@pytest.mark.parametrize("table_name", ["plain", "batched", "padded", "keras"])
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 4), (2, 3, 2), (0,)])
def test_json_lookup_equals_table_rows(client: httpx.Client, tables, table_name, shape) -> None:
    table = tables[table_name]
    ids = np.random.default_rng(len(shape)).integers(0, len(table), size=shape)
    response = client.post(f"/v1/tables/{table_name}/lookup", json={"ids": ids.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["table"] == table_name and body["dtype"] == "float32"
    assert body["shape"] == [*shape, table.shape[1]]
    got = np.array(body["vectors"], dtype=np.float32).reshape(body["shape"])
    np.testing.assert_array_equal(got, table[ids])


@pytest.mark.parametrize("table_name", ["plain", "batched"])
def test_base64_and_binary_responses_are_the_same_bytes(client, tables, table_name) -> None:
    table = tables[table_name]
    ids = [[5, 6, 7], [999, 0, 5]]
    expected = table[np.array(ids)]
    b64 = client.post(f"/v1/tables/{table_name}/lookup", json={"ids": ids, "encoding": "base64"})
    got = np.frombuffer(base64.b64decode(b64.json()["vectors"]), "<f4").reshape(2, 3, -1)
    np.testing.assert_array_equal(got, expected)
    raw = client.post(f"/v1/tables/{table_name}/lookup", json={"ids": ids}, headers=BINARY_OUT)
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["x-shape"] == f"2,3,{table.shape[1]}" and raw.headers["x-dtype"] == "float32"
    np.testing.assert_array_equal(
        np.frombuffer(raw.content, "<f4").reshape(expected.shape), expected
    )
    assert "x-backend-time-ms" in raw.headers and "x-queue-time-ms" in raw.headers


@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_binary_request(client, tables, dtype) -> None:
    ids = np.array([[3, 1], [4, 1], [5, 9]], dtype="<i8" if dtype == "int64" else "<i4")
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept": "application/octet-stream",
        "X-Shape": "3,2",
        "X-Dtype": dtype,
    }
    response = client.post("/v1/tables/plain/lookup", content=ids.tobytes(), headers=headers)
    assert response.status_code == 200, response.text
    got = np.frombuffer(response.content, "<f4").reshape(3, 2, -1)
    np.testing.assert_array_equal(got, tables["plain"][ids])
    json_out = client.post(
        "/v1/tables/plain/lookup",
        content=ids.tobytes(),
        headers={"Content-Type": "application/octet-stream", "X-Dtype": dtype},
    )
    assert json_out.json()["shape"] == [6, tables["plain"].shape[1]]


def test_accept_negotiation(client) -> None:
    def kind(accept: str) -> str:
        r = client.post("/v1/tables/plain/lookup", json={"ids": [1]}, headers={"Accept": accept})
        return r.headers["content-type"]

    assert kind("application/octet-stream") == "application/octet-stream"
    assert kind("application/json;q=0.5, application/octet-stream") == "application/octet-stream"
    assert kind("application/json, application/octet-stream;q=0.5") == "application/json"
    assert kind("*/*") == "application/json"


def test_float16_output_and_half_table(client, tables) -> None:
    ids = [0, 10, 999]
    half = client.post("/v1/tables/half/lookup", json={"ids": ids})
    got = np.array(half.json()["vectors"], dtype=np.float32)
    np.testing.assert_array_equal(got, tables["half"][ids].astype(np.float32))
    as16 = client.post(
        "/v1/tables/plain/lookup", json={"ids": ids, "dtype": "float16"}, headers=BINARY_OUT
    )
    assert as16.headers["x-dtype"] == "float16"
    np.testing.assert_array_equal(
        np.frombuffer(as16.content, "<f2").reshape(3, -1), tables["plain"][ids].astype(np.float16)
    )


def test_sequences_post_padding_and_truncation(client, tables) -> None:
    table = tables["keras"]  # mask_zero: id 0 pads
    body = {"sequences": [[5, 9, 2], [7], [], [0, 4]], "max_length": 2}
    response = client.post("/v1/tables/keras/sequences", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["shape"] == [4, 2, table.shape[1]]
    assert data["mask"] == [[True, True], [True, False], [False, False], [False, True]]
    assert data["lengths"] == [2, 1, 0, 2]
    vectors = np.array(data["vectors"], dtype=np.float32)
    np.testing.assert_array_equal(vectors[0], table[[5, 9]])
    np.testing.assert_array_equal(vectors[1, 0], table[7])
    assert not vectors[1, 1].any() and not vectors[2].any() and not vectors[3, 0].any()
    np.testing.assert_array_equal(vectors[3, 1], table[4])


def test_sequences_pre_and_binary(client, tables) -> None:
    table = tables["plain"]
    body = {"sequences": [[5, 9, 2], [7]], "max_length": 2, "padding": "pre", "truncating": "pre"}
    data = client.post("/v1/tables/plain/sequences", json=body).json()
    assert data["mask"] == [[True, True], [False, True]]
    vectors = np.array(data["vectors"], dtype=np.float32)
    np.testing.assert_array_equal(vectors[0], table[[9, 2]])
    np.testing.assert_array_equal(vectors[1, 1], table[7])
    raw = client.post("/v1/tables/plain/sequences", json=body, headers=BINARY_OUT)
    assert raw.headers["x-shape"] == f"2,2,{table.shape[1]}"
    assert raw.headers["x-mask-shape"] == "2,2" and raw.headers["x-lengths"] == "2,1"
    n = 2 * 2 * table.shape[1] * 4
    np.testing.assert_array_equal(np.frombuffer(raw.content[:n], "<f4").reshape(2, 2, -1), vectors)
    assert list(raw.content[n:]) == [1, 1, 0, 1]
    b64 = client.post("/v1/tables/plain/sequences", json={**body, "encoding": "base64"}).json()
    np.testing.assert_array_equal(
        np.frombuffer(base64.b64decode(b64["vectors"]), "<f4").reshape(2, 2, -1), vectors
    )


def test_sequences_binary_request(client, tables) -> None:
    ids = np.array([5, 9, 2, 7], dtype="<i8")
    response = client.post(
        "/v1/tables/plain/sequences",
        content=ids.tobytes(),
        headers={"Content-Type": "application/octet-stream", "X-Lengths": "3,1"},
    )
    data = response.json()
    assert data["lengths"] == [3, 1] and data["shape"][:2] == [2, 3]


def test_sequences_validate_dropped_ids_with_b_t_positions(client) -> None:
    body = {"sequences": [[1, 2], [3, 4, 5000]], "max_length": 1}
    error = client.post("/v1/tables/plain/sequences", json=body).json()["error"]
    assert error["code"] == "id_out_of_range" and error["detail"]["position"] == [1, 2]
    bad = client.post("/v1/tables/plain/sequences", json={"sequences": [[1], [2, 1.5]]}).json()
    assert bad["error"]["code"] == "invalid_ids" and bad["error"]["detail"]["position"] == [1, 1]


def test_health_tables_and_metrics(client, tables) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready["tables"]) == set(tables)
    infos = {t["name"]: t for t in client.get("/v1/tables").json()["tables"]}
    assert infos["padded"]["padding_idx"] == len(tables["padded"]) - 1
    assert infos["keras"]["mask_zero"] is True and infos["norm2"]["max_norm"] == 1.5
    assert infos["plain"]["backend"] == "numpy" and infos["plain"]["device"] == "cpu"
    assert infos["batched"]["backend"] == "onnxruntime" and infos["batched"]["batching"]["enabled"]
    one = client.get("/v1/tables/plain").json()
    assert one["rows"] == len(tables["plain"]) and one["format"] == "npy" and one["version"]
    # Multiprocess metrics show a series once a worker has recorded it: record one first.
    assert client.post("/v1/tables/plain/lookup", json={"ids": [1]}).status_code == 200
    metrics = client.get("/metrics").text
    assert "embedding_requests_total" in metrics and "embedding_backend_seconds" in metrics
    docs = client.get("/openapi.json").json()
    assert (
        "/v1/tables/{table}/lookup" in docs["paths"]
        and "LookupBody" in docs["components"]["schemas"]
    )
