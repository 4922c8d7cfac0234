"""Pooled bags equal torch.nn.EmbeddingBag (sum/mean/max, weights, padding_idx, empty bags) and TF sqrtn."""

from __future__ import annotations

import base64

import numpy as np
import pytest

BAGS = [[1, 2, 3], [], [4], [5, 5, 6, 7], [999, 0]]


def post(client, table: str, body: dict) -> np.ndarray:
    response = client.post(f"/v1/tables/{table}/bags", json={**body, "encoding": "base64"})
    assert response.status_code == 200, response.text
    data = response.json()
    return np.frombuffer(base64.b64decode(data["vectors"]), "<f4").reshape(data["shape"])


def flat(bags):
    ids = [i for bag in bags for i in bag]
    offsets = np.concatenate(([0], np.cumsum([len(b) for b in bags])[:-1])).astype(int).tolist()
    return ids, offsets


@pytest.mark.reference
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("table_name", ["plain", "padded", "batched"])
def test_bags_equal_torch_embedding_bag(client, tables, mode, table_name) -> None:
    torch = pytest.importorskip("torch", reason="reference extra (torch) not installed")
    table = tables[table_name]
    pad = len(table) - 1 if table_name == "padded" else None
    bags = [*BAGS, [pad, pad] if pad else [8], [pad, 3] if pad else [9]]
    ids, offsets = flat(bags)
    layer = torch.nn.EmbeddingBag.from_pretrained(
        torch.from_numpy(table.copy()), mode=mode, padding_idx=pad
    )
    expected = layer(torch.tensor(ids), torch.tensor(offsets)).numpy()
    got = post(client, table_name, {"bags": bags, "mode": mode})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    same = post(client, table_name, {"ids": ids, "offsets": offsets, "mode": mode})
    np.testing.assert_array_equal(same, got)


@pytest.mark.reference
def test_weighted_sum_equals_torch_per_sample_weights(client, tables) -> None:
    torch = pytest.importorskip("torch", reason="reference extra (torch) not installed")
    table = tables["padded"]
    pad = len(table) - 1
    bags = [[1, 2, pad], [], [3]]
    weights = [[0.5, 2.0, 9.0], [], [-1.5]]
    ids, offsets = flat(bags)
    layer = torch.nn.EmbeddingBag.from_pretrained(
        torch.from_numpy(table.copy()), mode="sum", padding_idx=pad
    )
    expected = layer(
        torch.tensor(ids),
        torch.tensor(offsets),
        per_sample_weights=torch.tensor([w for ws in weights for w in ws]),
    ).numpy()
    got = post(client, "padded", {"bags": bags, "weights": weights, "mode": "sum"})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_sqrtn_equals_tf_definition(client, tables) -> None:
    table = tables["plain"]
    bags = [[1, 2, 3], [4], []]
    weights = [[1.0, 2.0, 0.5], [3.0], []]
    got = post(client, "plain", {"bags": bags, "weights": weights, "mode": "sqrtn"})
    for b, (bag, w) in enumerate(zip(bags, weights, strict=True)):
        if not bag:
            assert not got[b].any()
            continue
        w = np.array(w)
        expected = (table[bag].astype(np.float64) * w[:, None]).sum(0) / np.sqrt((w**2).sum())
        np.testing.assert_allclose(got[b], expected, rtol=1e-6)
    unweighted = post(client, "plain", {"bags": [[1, 2, 3, 4]], "mode": "sqrtn"})
    np.testing.assert_allclose(
        unweighted[0], table[[1, 2, 3, 4]].astype(np.float64).sum(0) / 2, rtol=1e-6
    )


def test_binary_response_and_json(client, tables) -> None:
    raw = client.post(
        "/v1/tables/plain/bags",
        json={"bags": [[1, 2]], "mode": "sum"},
        headers={"Accept": "application/octet-stream"},
    )
    assert raw.headers["x-shape"] == f"1,{tables['plain'].shape[1]}"
    vectors = np.frombuffer(raw.content, "<f4").reshape(1, -1)
    js = np.array(
        client.post("/v1/tables/plain/bags", json={"bags": [[1, 2]], "mode": "sum"}).json()[
            "vectors"
        ],
        np.float32,
    )
    np.testing.assert_array_equal(vectors, js)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"bags": [[1, -1]]}, "id_out_of_range"),
        ({"bags": [[1, True]]}, "invalid_ids"),
        ({"bags": [1, 2]}, "invalid_ids"),
        ({"bags": [[1]], "mode": "median"}, "invalid_request"),
        ({"bags": [[1]], "weights": [[1.0]], "mode": "max"}, "invalid_request"),
        ({"bags": [[1, 2]], "weights": [[1.0]], "mode": "sum"}, "invalid_request"),
        ({"bags": [[1]], "weights": [[True]], "mode": "sum"}, "invalid_request"),
        ({"ids": [1, 2], "offsets": [1]}, "invalid_request"),
        ({"ids": [1, 2], "offsets": [0, 3]}, "invalid_request"),
        ({"ids": [1, 2]}, "invalid_request"),
        ({"bags": [[1]], "ids": [1], "offsets": [0]}, "invalid_request"),
    ],
)
def test_bags_errors(client, body, code) -> None:
    response = client.post("/v1/tables/plain/bags", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
