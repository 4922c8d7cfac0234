"""The raw-ASGI dispatcher and the generated FastAPI routes (``--no-raw-asgi-front``) answer byte
for byte the same, on every POST route of the route table."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.http.app import create_app
from service.http.route_matcher import RouteMatcher
from service.http.route_table import ROUTES
from service.settings import ServiceSettings

ADMIN = {"Authorization": "Bearer adm"}
BINARY = {"Accept": "application/octet-stream"}
OCTET = {"Content-Type": "application/octet-stream"}
V2_IDS = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2], "data": [1, 2]}]}

# (path, JSON body or raw bytes, headers, expected status)
REQUESTS: list[tuple[str, Any, dict[str, str], int]] = [
    ("/v1/tables/t/lookup", {"ids": [[1, 2], [3, 4]]}, {}, 200),
    ("/v1/tables/t/lookup", {"ids": [[1, 2], [3, 4]]}, {}, 200),  # warm row cache
    ("/v1/tables/t/lookup", {"ids": [5], "encoding": "base64"}, {}, 200),
    ("/v1/tables/t/lookup", {"ids": [5, 6], "dtype": "float16"}, {}, 200),
    ("/v1/tables/t/lookup", {"ids": [5, 6]}, BINARY, 200),
    ("/v1/tables/t/lookup", np.array([1, 2, 3], "<i8").tobytes(), OCTET, 200),
    ("/v1/tables/t/lookup", {"ids": [-1]}, {}, 422),
    ("/v1/tables/t/lookup", b"ids", {"Content-Type": "text/plain"}, 415),
    ("/v1/tables/nope/lookup", {"ids": [1]}, {}, 404),
    ("/v1/tables/t/sequences", {"sequences": [[1, 0, 2], [3]], "max_length": 2}, {}, 200),
    ("/v1/tables/t/sequences", {"sequences": [[1, 0, 2], [3]], "padding": "pre"}, BINARY, 200),
    ("/v1/tables/t/sequences", {"sequences": [[], []]}, BINARY, 200),
    (
        "/v1/tables/t/sequences",
        np.array([4, 0, 5], "<i8").tobytes(),
        {**OCTET, "X-Lengths": "2,1"},
        200,
    ),
    ("/v1/tables/t/bags", {"bags": [[1, 2], []], "mode": "max"}, {}, 200),
    ("/v1/tables/t/bags", {"bags": [[1, 2]], "encoding": "base64"}, {}, 200),
    ("/v1/tables/t/bags", b"\x01", OCTET, 415),
    ("/v1/tables/t/neighbors", {"ids": [3], "k": 4}, {}, 200),
    ("/v1/tables/t/neighbors", {"vectors": [1, 2, 3, 4, 5, 6], "k": 2}, {}, 200),
    ("/v1/embeddings", {"model": "t", "input": [[1, 2], [3]]}, {}, 200),
    ("/v1/embeddings", {"model": "t", "input": 4, "encoding_format": "base64"}, {}, 200),
    ("/v1/embeddings", {"model": "nope", "input": 4}, {}, 404),
    ("/v1/groups/none/lookup", {"tables": {"a": {"ids": [1]}}}, {}, 404),
    ("/v1/admin/tables/t/reload", b"", ADMIN, 200),
    ("/v1/admin/tables/t/reload", b"", {}, 401),
    ("/v1/admin/tables/t/rows", {"ids": [10**6], "vectors": [[0.0]]}, ADMIN, 422),
    ("/v1/admin/tables/t/rows", {"ids": [1], "vectors": [[0.0]]}, {}, 401),
    ("/v2/models/t/infer", V2_IDS, {}, 200),
    ("/v2/models/t/infer", V2_IDS, {}, 200),  # warm row cache
    ("/v2/models/t/versions/1/infer", V2_IDS, {}, 200),
    ("/v2/models/t/versions/2/infer", V2_IDS, {}, 404),
    ("/v2/models/t/infer", {"inputs": []}, {}, 422),
    (
        "/v2/models/t.sequences/infer",
        {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2, 2], "data": [1, 0, 0, 3]}]},
        {},
        200,
    ),
    # Empty tensors in the binary forms (one copy into the body, zero-size included).
    (
        "/v2/models/t/infer",
        {
            "inputs": [{"name": "ids", "datatype": "INT64", "shape": [0, 3], "data": []}],
            "parameters": {"binary_data_output": True},
        },
        {},
        200,
    ),
    (
        "/v2/models/t.sequences/infer",
        {
            "inputs": [{"name": "ids", "datatype": "INT64", "shape": [2, 0], "data": []}],
            "parameters": {"binary_data_output": True},
        },
        {},
        200,
    ),
]

Answer = tuple[int, bytes, str | None, str | None]


def answers(folder: Path, raw_asgi_front: bool) -> list[Answer]:
    settings = ServiceSettings(models=folder, raw_asgi_front=raw_asgi_front, admin_key="adm")
    app = create_app(settings)

    async def run() -> list[Answer]:
        await app.registry.load()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            out = []
            for path, body, headers, _ in REQUESTS:
                if isinstance(body, bytes):
                    response = await http.post(path, content=body, headers=headers)
                else:
                    response = await http.post(path, json=body, headers=headers)
                out.append(
                    (
                        response.status_code,
                        response.content,
                        response.headers.get("x-shape"),
                        response.headers.get("content-type"),
                    )
                )
            await app.registry.close()
            return out

    return asyncio.run(run())


def test_every_post_route_is_exercised() -> None:
    matcher = RouteMatcher(ROUTES)
    hit = {id(found[0]) for path, *_ in REQUESTS if (found := matcher.match("POST", path))}
    posts = [route.path for route in ROUTES if "POST" in route.methods]
    assert [p for p in posts if not any(id(r) in hit for r in ROUTES if r.path == p)] == []


@pytest.mark.parametrize(
    "options", ["", 'backend = "onnxruntime"\nbatching = true\n'], ids=["numpy", "ort"]
)
def test_raw_asgi_front_and_fastapi_routes_agree(tmp_path: Path, options: str) -> None:
    np.save(
        tmp_path / "t.npy", np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    )
    (tmp_path / "t.toml").write_text("mask_zero = true\n" + options)
    fast, routed = answers(tmp_path, True), answers(tmp_path, False)
    assert [status for status, *_ in fast] == [status for *_, status in REQUESTS]
    assert fast == routed
