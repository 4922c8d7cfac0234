"""The project's Python client against a real server (binary and JSON), and its retry logic."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from service import errors
from service.client import AsyncEmbeddingClient, EmbeddingClient


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_lookup_and_sequences(server, tables, binary) -> None:
    with EmbeddingClient(server.url, binary=binary) as client:
        names = {t["name"] for t in client.tables()}
        assert {"plain", "keras"} <= names
        ids = np.array([[1, 2, 3], [4, 5, 6]])
        np.testing.assert_array_equal(client.lookup("plain", ids), tables["plain"][ids])
        np.testing.assert_array_equal(client.lookup("batched", [7]), tables["batched"][[7]])
        half = client.lookup("plain", [1, 2], dtype="float16")
        assert half.dtype == np.float16
        np.testing.assert_array_equal(half, tables["plain"][[1, 2]].astype(np.float16))
        vectors, mask, lengths = client.sequences(
            "keras", [[5, 0, 2], [7]], max_length=3, padding="pre"
        )
        assert mask.tolist() == [[True, False, True], [False, False, True]]
        assert lengths.tolist() == [3, 1]
        np.testing.assert_array_equal(vectors[0, 2], tables["keras"][2])
        np.testing.assert_array_equal(vectors[1, 2], tables["keras"][7])
        assert not vectors[1, :2].any()


def test_errors_are_typed(server) -> None:
    with EmbeddingClient(server.url) as client:
        with pytest.raises(errors.IdOutOfRange) as raised:
            client.lookup("plain", [1, 10**6])
        assert raised.value.code == "id_out_of_range" and raised.value.detail["position"] == [1]
        with pytest.raises(errors.TableNotFound):
            client.lookup("missing", [1])


def test_async_client(server, tables) -> None:
    async def run() -> list[np.ndarray]:
        async with AsyncEmbeddingClient(server.url) as client:
            return await asyncio.gather(*(client.lookup("batched", [i, i + 1]) for i in range(50)))

    for i, got in enumerate(asyncio.run(run())):
        np.testing.assert_array_equal(got, tables["batched"][[i, i + 1]])


def test_retries_503_honouring_retry_after() -> None:
    calls: list[float] = []
    table = np.arange(8, dtype=np.float32).reshape(2, 4)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(__import__("time").monotonic())
        if len(calls) < 3:
            return httpx.Response(
                503,
                headers={"Retry-After": "0.05"},
                json={"error": {"code": "overloaded", "message": "busy"}},
            )
        return httpx.Response(
            200,
            content=table.tobytes(),
            headers={"X-Shape": "2,4", "Content-Type": "application/octet-stream"},
        )

    with EmbeddingClient(
        "http://test", transport=httpx.MockTransport(handler), retries=3
    ) as client:
        np.testing.assert_array_equal(client.lookup("t", [0, 1]), table)
    assert len(calls) == 3 and calls[2] - calls[0] >= 0.09

    def always_busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503,
            headers={"Retry-After": "0"},
            json={"error": {"code": "overloaded", "message": "busy"}},
        )

    with (
        EmbeddingClient(
            "http://test", transport=httpx.MockTransport(always_busy), retries=2
        ) as client,
        pytest.raises(errors.Overloaded),
    ):
        client.lookup("t", [0])


def test_api_key_is_sent() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(200, json={"tables": []})

    with EmbeddingClient(
        "http://test", api_key="k", transport=httpx.MockTransport(handler)
    ) as client:
        assert client.tables() == []
    assert seen["auth"] == "Bearer k"
