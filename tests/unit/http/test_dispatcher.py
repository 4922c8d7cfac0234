"""The one dispatcher: every route counted with the same labels, HEAD probes, readiness
states, docs offline and behind the key, V2 JSON from the row-text cache."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from service import metrics
from service.http.app import create_app
from service.http.route_table import ROUTES
from service.settings import ServiceSettings

Check = Callable[[httpx.AsyncClient, Any], Awaitable[None]]


def _table(folder: Path) -> np.ndarray:
    table = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    np.save(folder / "t.npy", table)
    return table


def _run(folder: Path, check: Check, **settings: Any) -> None:
    app = create_app(ServiceSettings(models=folder, **settings))

    async def run() -> None:
        await app.registry.load()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                await check(http, app)
        finally:
            await app.registry.close()

    asyncio.run(run())


def _count(table: str, route: str, status: int) -> float:
    metrics.flush_pending()  # as a scrape does
    value = metrics.REQUESTS.labels(table, route, str(status))._value.get()
    return float(value)


@pytest.mark.parametrize(
    "raw_asgi_front", [True, False], ids=["raw-asgi-front", "no-raw-asgi-front"]
)
def test_every_route_is_counted_with_the_same_labels(tmp_path: Path, raw_asgi_front: bool) -> None:
    _table(tmp_path)
    calls = [
        ("POST", "/v1/tables/t/lookup", {"ids": [1]}, ("t", "lookup", 200)),
        ("POST", "/v1/tables/zz/lookup", {"ids": [1]}, (metrics.UNKNOWN_TABLE, "lookup", 404)),
        ("POST", "/v1/embeddings", {"model": "t", "input": [1, 2]}, ("t", "embeddings", 200)),
        (
            "POST",
            "/v2/models/t/infer",
            {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1], "data": [3]}]},
            ("t", "infer", 200),
        ),
        ("POST", "/v1/admin/tables/t/reload", None, ("t", "reload", 200)),
        ("GET", "/healthz", None, ("", "healthz", 200)),
        ("GET", "/v2/health/ready", None, ("", "ready", 200)),
    ]

    async def check(http: httpx.AsyncClient, app: Any) -> None:
        for method, path, body, labels in calls:
            before = _count(*labels)
            response = await http.request(
                method, path, json=body, headers={"Authorization": "Bearer adm"}
            )
            assert response.status_code == labels[2], (path, response.text)
            assert _count(*labels) == before + 1, path

    _run(tmp_path, check, raw_asgi_front=raw_asgi_front, admin_key="adm")


@pytest.mark.parametrize(
    "raw_asgi_front", [True, False], ids=["raw-asgi-front", "no-raw-asgi-front"]
)
def test_head_on_probes(tmp_path: Path, raw_asgi_front: bool) -> None:
    _table(tmp_path)

    async def check(http: httpx.AsyncClient, app: Any) -> None:
        for path in ("/healthz", "/readyz"):
            get, head = await http.get(path), await http.head(path)
            assert head.status_code == get.status_code == 200
            assert head.content == b""
            assert head.headers["content-length"] == str(len(get.content))

    _run(tmp_path, check, raw_asgi_front=raw_asgi_front)


@pytest.mark.parametrize("state", ["loading", "degraded", "draining"])
def test_readyz_is_503_unless_ready(tmp_path: Path, state: str) -> None:
    _table(tmp_path)

    async def check(http: httpx.AsyncClient, app: Any) -> None:
        app.registry.status = lambda: (state, {})
        response = await http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == state
        assert (await http.get("/v2/health/ready")).status_code == 503

    _run(tmp_path, check)


def test_docs_work_offline_and_need_the_key(tmp_path: Path) -> None:
    _table(tmp_path)
    key = {"Authorization": "Bearer k1"}

    async def check(http: httpx.AsyncClient, app: Any) -> None:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await http.get(path)).status_code == 401, path
            assert (await http.get(path, headers=key)).status_code == 200, path
        page = (await http.get("/docs", headers=key)).text
        assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        script = await http.get("/docs/assets/swagger-ui-bundle.js")  # assets are public
        assert script.status_code == 200 and len(script.content) > 100_000
        assert (await http.get("/docs/assets/secret.txt")).status_code == 404
        schema = (await http.get("/openapi.json", headers=key)).json()
        documented = {route.path for route in ROUTES if route.doc.in_schema}
        assert documented <= set(schema["paths"])

    _run(tmp_path, check, api_keys="k1")


def test_v2_json_data_equals_the_rows(tmp_path: Path) -> None:
    table = _table(tmp_path)
    ids = np.array([[3, 0], [3, 29]])
    body = {
        "inputs": [{"name": "ids", "datatype": "INT64", "shape": [2, 2], "data": [3, 0, 3, 29]}]
    }

    async def check(http: httpx.AsyncClient, app: Any) -> None:
        for _ in range(2):  # cold and warm row cache
            output = (await http.post("/v2/models/t/infer", json=body)).json()["outputs"][0]
            assert output["shape"] == [2, 2, 4]
            assert output["data"] == orjson.loads(
                orjson.dumps(table[ids].reshape(-1), option=orjson.OPT_SERIALIZE_NUMPY)
            )

    _run(tmp_path, check)
