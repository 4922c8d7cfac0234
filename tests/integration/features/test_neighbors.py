"""Nearest neighbours equal a brute-force numpy reference: full scores, lexsort (score desc, id asc)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.support.server_process import ServerProcess
from tests.support.tables import write_npy


def reference(table: np.ndarray, queries: np.ndarray, k: int, metric: str, exclude=None):
    t = table.astype(np.float32)
    q = queries.astype(np.float32)
    if metric == "cosine":
        tn = np.linalg.norm(t.astype(np.float64), axis=1).astype(np.float32)
        qn = np.linalg.norm(q.astype(np.float64), axis=1)
        q = (q / np.where(qn == 0, 1, qn)[:, None]).astype(np.float32)
        scores = (q @ t.T) * np.where(tn == 0, 0, 1 / np.where(tn == 0, 1, tn)).astype(np.float32)
    elif metric == "dot":
        scores = q @ t.T
    else:
        sq = np.linalg.norm(t.astype(np.float64), axis=1).astype(np.float32) ** 2
        scores = -(np.einsum("ij,ij->i", q, q)[:, None] - 2 * (q @ t.T) + sq[None, :])
    out_ids, out_scores = [], []
    for i in range(len(q)):
        s = scores[i].copy()
        if exclude is not None:
            s[exclude[i]] = -np.inf
        order = np.lexsort((np.arange(len(t)), -s))[:k]
        out_ids.append(order)
        out_scores.append(s[order])
    return np.array(out_ids), np.array(out_scores)


@pytest.fixture(scope="module")
def neighbor_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nn") / "models"
    table = np.random.default_rng(4).standard_normal((20_000, 24)).astype(np.float32)
    table[[10, 20, 30]] = table[40]  # exact ties: lower id first
    table[50] = 0.0  # a zero row: cosine 0
    write_npy(folder, "items", table)
    with ServerProcess(folder) as server:
        server.wait_ready()
        yield server, table


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_ids_query_equals_reference(neighbor_server, metric, exclude_self) -> None:
    server, table = neighbor_server
    ids = [40, 7, 50, 19_999]
    body = {"ids": ids, "k": 10, "metric": metric, "exclude_self": exclude_self}
    data = httpx.post(f"{server.url}/v1/tables/items/neighbors", json=body, timeout=30).json()
    expected_ids, expected_scores = reference(
        table, table[ids], 10, metric, ids if exclude_self else None
    )
    np.testing.assert_array_equal(np.array(data["ids"]), expected_ids)
    np.testing.assert_allclose(np.array(data["scores"]), expected_scores, rtol=1e-5, atol=1e-4)
    if metric == "cosine" and exclude_self:
        assert data["ids"][0][:3] == [10, 20, 30]  # three identical rows: lower id first


def test_vector_query(neighbor_server) -> None:
    server, table = neighbor_server
    query = np.random.default_rng(9).standard_normal((2, 24)).astype(np.float32)
    data = httpx.post(
        f"{server.url}/v1/tables/items/neighbors",
        json={"vectors": query.tolist(), "k": 5, "metric": "dot"},
    ).json()
    expected_ids, _ = reference(table, query, 5, "dot")
    np.testing.assert_array_equal(np.array(data["ids"]), expected_ids)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"ids": [1], "k": 0}, 422),
        ({"ids": [1], "k": 1001}, 422),
        ({"ids": [-1]}, 422),
        ({"ids": [1], "metric": "manhattan"}, 422),
        ({"vectors": [[1.0, 2.0]]}, 422),
        ({"ids": [1], "vectors": [[1.0] * 24]}, 422),
        ({}, 422),
        ({"keys": ["a"]}, 422),
        ({"vectors": [[True] * 24]}, 422),
    ],
)
def test_errors(neighbor_server, body, status) -> None:
    server, _ = neighbor_server
    assert httpx.post(f"{server.url}/v1/tables/items/neighbors", json=body).status_code == status
