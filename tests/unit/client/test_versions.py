"""The client's versions and groups against httpx.MockTransport: no server.

What goes on the wire (``?version=``, the group body) and what comes back (``X-Table-Version``,
base64 members decoded, ``version_not_found`` raised as ``VersionNotFound``), sync and async.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json

import httpx
import numpy as np
import pytest

from service import errors
from service.client import AsyncEmbeddingClient, EmbeddingClient, GroupResult, Looked, routes

TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)
ITEMS = np.arange(60, dtype=np.float32).reshape(10, 6) / 7


def _b64(array: np.ndarray) -> dict[str, object]:
    return {
        "shape": list(array.shape),
        "dtype": "float32",
        "vectors": base64.b64encode(array.astype("<f4").tobytes()).decode(),
    }


class FakeServer:
    """Answers the routes the client uses as the contract says; remembers every request."""

    def __init__(self, version: str = "7") -> None:
        self.version = version
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        asked = request.url.params.get("version")
        if asked not in (None, "3", "7", "stable"):
            error = {"code": "version_not_found", "message": f"no version {asked}"}
            error["detail"] = {"versions": ["7"], "labels": {"stable": "7"}}
            return httpx.Response(404, json={"error": error})
        headers = {"X-Table-Version": self.version}
        path = request.url.path
        if path.endswith("/lookup") and path.startswith("/v1/groups/"):
            return httpx.Response(200, json=self._group(request), headers=headers)
        if path.endswith("/lookup"):
            return self._lookup(request, headers)
        if path == "/v1/groups":
            return httpx.Response(200, json={"groups": [{"name": "two_tower"}]})
        return httpx.Response(200, json={"path": path}, headers=headers)

    def _lookup(self, request: httpx.Request, headers: dict[str, str]) -> httpx.Response:
        if request.headers.get("content-type") == "application/octet-stream":
            ids = np.frombuffer(request.content, "<i8")
            headers["X-Shape"] = request.headers["x-shape"] + ",4"
            return httpx.Response(200, content=TABLE[ids].tobytes(), headers=headers)
        ids = np.array(json.loads(request.content)["ids"])
        return httpx.Response(200, json=_b64(TABLE[ids]), headers=headers)

    def _group(self, request: httpx.Request) -> dict[str, object]:
        body = json.loads(request.content)
        assert body["encoding"] == "base64"
        sources = {"user": TABLE, "item": ITEMS}
        tables = {m: _b64(sources[m][np.array(q["ids"])]) for m, q in body["tables"].items()}
        return {"group": "two_tower", "version": self.version, "tables": tables}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", [None, 7, "stable"])
def test_lookup_sends_the_version_and_reads_the_answering_one(binary, version) -> None:
    server = FakeServer()
    with EmbeddingClient("http://t", binary=binary, transport=httpx.MockTransport(server)) as c:
        np.testing.assert_array_equal(c.lookup("t", [1, 2], version=version), TABLE[[1, 2]])
        looked = c.lookup_versioned("t", [[3], [4]], version=version)
    assert isinstance(looked, Looked) and looked.version == "7"
    np.testing.assert_array_equal(looked.vectors, TABLE[[[3], [4]]])
    sent = [r.url.params.get("version") for r in server.requests]
    assert sent == [None if version is None else str(version)] * 2


def test_table_info_takes_a_version() -> None:
    server = FakeServer()
    with EmbeddingClient("http://t", transport=httpx.MockTransport(server)) as c:
        assert c.table("two_tower.user", version=3) == {"path": "/v1/tables/two_tower.user"}
        c.table("t")
    assert [r.url.params.get("version") for r in server.requests] == ["3", None]


def test_sequences_bags_neighbors_carry_the_version() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500, json={"error": {"code": "internal", "message": "stop"}})

    with EmbeddingClient("http://t", binary=False, transport=httpx.MockTransport(handler)) as c:
        for call in (
            lambda: c.sequences("t", [[1, 2]], version="canary"),
            lambda: c.bags("t", [[1, 2]], version="canary"),
            lambda: c.neighbors("t", ids=[1], version="canary"),
        ):
            with pytest.raises(errors.InternalError):
                call()
    assert [r.url.path.rsplit("/", 1)[1] for r in seen] == ["sequences", "bags", "neighbors"]
    assert {r.url.params["version"] for r in seen} == {"canary"}


def test_a_bad_version_argument_is_refused_before_sending() -> None:
    with EmbeddingClient("http://t", transport=httpx.MockTransport(FakeServer())) as c:
        with pytest.raises(TypeError):
            c.lookup("t", [1], version=True)
        with pytest.raises(TypeError):
            c.lookup("t", [1], version=1.5)  # type: ignore[arg-type]


def test_version_not_found_is_raised_with_what_is_served() -> None:
    transport = httpx.MockTransport(FakeServer())
    with (
        EmbeddingClient("http://t", transport=transport) as c,
        pytest.raises(errors.VersionNotFound) as raised,
    ):
        c.lookup("t", [1], version=9)
    assert raised.value.status == 404 and raised.value.code == "version_not_found"
    assert raised.value.detail == {"versions": ["7"], "labels": {"stable": "7"}}


def test_an_answer_without_the_header_has_no_version() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=TABLE[[0]].tobytes(), headers={"X-Shape": "1,4"})

    with EmbeddingClient("http://t", transport=httpx.MockTransport(handler)) as c:
        assert c.lookup_versioned("t", [0]).version is None


def test_group_lookup_builds_the_body_and_decodes_every_member() -> None:
    server = FakeServer()
    with EmbeddingClient("http://t", transport=httpx.MockTransport(server)) as c:
        result = c.group_lookup(
            "two_tower", {"user": np.array([[1, 2], [3, 4]]), "item": [5]}, version="stable"
        )
    assert isinstance(result, GroupResult)
    assert (result.group, result.version) == ("two_tower", "7")
    np.testing.assert_array_equal(result.vectors["user"], TABLE[[[1, 2], [3, 4]]])
    np.testing.assert_array_equal(result.vectors["item"], ITEMS[[5]])
    assert result.vectors["item"].dtype == np.float32
    (request,) = server.requests
    assert request.method == "POST" and request.url.path == "/v1/groups/two_tower/lookup"
    assert request.url.params["version"] == "stable"
    assert json.loads(request.content) == {
        "tables": {"user": {"ids": [[1, 2], [3, 4]]}, "item": {"ids": [5]}},
        "encoding": "base64",
    }


def test_group_lookup_refuses_float_ids() -> None:
    transport = httpx.MockTransport(FakeServer())
    with EmbeddingClient("http://t", transport=transport) as c, pytest.raises(TypeError):
        c.group_lookup("g", {"user": [1.5]})


def test_group_info_routes() -> None:
    server = FakeServer()
    with EmbeddingClient("http://t", transport=httpx.MockTransport(server)) as c:
        assert c.groups() == [{"name": "two_tower"}]
        assert c.group("two_tower") == {"path": "/v1/groups/two_tower"}
    assert [r.method for r in server.requests] == ["GET", "GET"]


def test_errors_keep_headers_and_build_for_every_class() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"code": "backend_unavailable", "message": "redis down"}
        return httpx.Response(503, json={"error": error}, headers={"Retry-After": "0"})

    transport = httpx.MockTransport(handler)
    with (
        EmbeddingClient("http://t", retries=0, transport=transport) as c,
        pytest.raises(errors.BackendUnavailable) as raised,
    ):
        c.lookup("t", [1])
    assert raised.value.headers["retry-after"] == "0"


def test_async_twin() -> None:
    server = FakeServer()

    async def run() -> tuple[Looked, GroupResult, dict[str, object]]:
        transport = httpx.MockTransport(server)
        async with AsyncEmbeddingClient("http://t", transport=transport) as c:
            looked = await c.lookup_versioned("t", [1], version=7)
            group = await c.group_lookup("two_tower", {"user": [2]}, version="stable")
            info = await c.table("t", version="stable")
            with pytest.raises(errors.VersionNotFound):
                await c.lookup("t", [1], version="nope")
            return looked, group, info

    looked, group, info = asyncio.run(run())
    assert looked.version == "7" and group.version == "7"
    np.testing.assert_array_equal(looked.vectors, TABLE[[1]])
    np.testing.assert_array_equal(group.vectors["user"], TABLE[[2]])
    assert info == {"path": "/v1/tables/t"}
    assert [r.url.params.get("version") for r in server.requests] == [
        "7",
        "stable",
        "stable",
        "nope",
    ]


def test_both_clients_have_every_route_with_its_signature() -> None:
    built = {
        name
        for name, value in vars(routes).items()
        if inspect.isfunction(value) and value.__module__ == routes.__name__
    }
    for client in (EmbeddingClient, AsyncEmbeddingClient):
        for name in built:
            method = getattr(client, name)
            assert method.__doc__ == getattr(routes, name).__doc__
            assert next(iter(inspect.signature(method).parameters)) == "self"
            assert inspect.iscoroutinefunction(method) == (client is AsyncEmbeddingClient)
