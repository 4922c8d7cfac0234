"""Hundreds of concurrent requests against a real server: each response holds exactly its own rows."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest


@pytest.mark.parametrize("table_name", ["plain", "batched"])
def test_concurrent_requests_get_their_own_rows(server, tables, table_name) -> None:
    table = tables[table_name]
    rng = np.random.default_rng(42)
    requests = []
    for i in range(240):
        kind = i % 3
        if kind == 0:
            requests.append(("lookup", rng.integers(0, len(table), size=int(rng.integers(1, 50)))))
        elif kind == 1:
            requests.append(
                ("lookup", rng.integers(0, len(table), size=(3, int(rng.integers(1, 9)))))
            )
        else:
            requests.append(("binary", rng.integers(0, len(table), size=int(rng.integers(1, 50)))))

    async def one(http: httpx.AsyncClient, kind: str, ids: np.ndarray) -> np.ndarray:
        url = f"/v1/tables/{table_name}/lookup"
        if kind == "binary":
            response = await http.post(
                url,
                content=ids.astype("<i8").tobytes(),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Accept": "application/octet-stream",
                },
            )
            assert response.status_code == 200, response.text
            return np.frombuffer(response.content, "<f4").reshape(*ids.shape, -1)
        response = await http.post(url, json={"ids": ids.tolist()})
        assert response.status_code == 200, response.text
        return np.array(response.json()["vectors"], dtype=np.float32)

    async def all_at_once() -> list[np.ndarray]:
        limits = httpx.Limits(max_connections=240, max_keepalive_connections=240)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
            return await asyncio.gather(*(one(http, kind, ids) for kind, ids in requests))

    results = asyncio.run(all_at_once())
    assert len(results) == len(requests)
    for (_, ids), got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, table[ids])
