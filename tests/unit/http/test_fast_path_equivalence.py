"""The lean hot path and FastAPI's routes (``--no-fast-path``) answer byte for byte the same."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.http.app import create_app
from service.settings import ServiceSettings

REQUESTS = [
    ("/v1/tables/t/lookup", {"ids": [[1, 2], [3, 4]]}, {}),
    ("/v1/tables/t/lookup", {"ids": [5], "encoding": "base64"}, {}),
    ("/v1/tables/t/lookup", {"ids": [5, 6]}, {"Accept": "application/octet-stream"}),
    ("/v1/tables/t/lookup", {"ids": [-1]}, {}),
    ("/v1/tables/t/sequences", {"sequences": [[1, 0, 2], [3]], "max_length": 2}, {}),
    ("/v1/tables/t/bags", {"bags": [[1, 2], []], "mode": "max"}, {}),
    ("/v1/tables/t/neighbors", {"ids": [3], "k": 4}, {}),
    ("/v1/tables/nope/lookup", {"ids": [1]}, {}),
    (
        "/v2/models/t/infer",
        {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2], "data": [1, 2]}]},
        {},
    ),
    ("/v2/models/t/infer", {"inputs": []}, {}),
    # Empty tensors in the binary forms (one copy into the body, zero-size included).
    (
        "/v2/models/t/infer",
        {
            "inputs": [{"name": "ids", "datatype": "INT64", "shape": [0, 3], "data": []}],
            "parameters": {"binary_data_output": True},
        },
        {},
    ),
    (
        "/v2/models/t.sequences/infer",
        {
            "inputs": [{"name": "ids", "datatype": "INT64", "shape": [2, 0], "data": []}],
            "parameters": {"binary_data_output": True},
        },
        {},
    ),
    ("/v1/tables/t/sequences", {"sequences": [[], []]}, {"Accept": "application/octet-stream"}),
]


def answers(folder: Path, fast_path: bool) -> list[tuple[int, bytes, str | None]]:
    app = create_app(ServiceSettings(models=folder, fast_path=fast_path))

    async def run() -> list[tuple[int, bytes, str | None]]:
        await app.registry.load()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            out = []
            for path, body, headers in REQUESTS:
                response = await http.post(path, json=body, headers=headers)
                out.append(
                    (response.status_code, response.content, response.headers.get("x-shape"))
                )
            return out

    return asyncio.run(run())


@pytest.mark.parametrize(
    "options", ["", 'backend = "onnxruntime"\nbatching = true\n'], ids=["numpy", "ort"]
)
def test_fast_path_and_fastapi_routes_agree(tmp_path: Path, options: str) -> None:
    np.save(
        tmp_path / "t.npy", np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    )
    (tmp_path / "t.toml").write_text("mask_zero = true\n" + options)
    fast, routed = answers(tmp_path, True), answers(tmp_path, False)
    assert [status for status, _, _ in fast] == [
        200,
        200,
        200,
        422,
        200,
        200,
        200,
        404,
        200,
        422,
        200,
        200,
        200,
    ]
    assert fast == routed
