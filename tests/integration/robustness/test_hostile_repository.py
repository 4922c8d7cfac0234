"""A real server over the hostile repository: one bad table never stops the others.

Symlinks out of the repository are refused (and nothing of what they point at is ever
served), ConfigMap-style ``..data`` symlinks serve, non-finite tables never answer
``null``, wrongly typed options fail, and a table that failed answers
``503 table_unavailable`` with its reason on every route, not ``404``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.support.hostile_repository import (
    OUTSIDE_VOCAB,
    HostileRepository,
    write_hostile_repository,
)
from tests.support.server_process import ServerProcess


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HostileRepository, httpx.Client]]:
    repo = write_hostile_repository(tmp_path_factory.mktemp("hostile"))
    with ServerProcess(repo.models) as server:
        server.wait_ready(timeout=60)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield repo, client
        log = server.log()
    for name in repo.failed:  # each failure is named in the log too
        assert f"table {name} not loaded" in log


def test_readyz_names_every_failure_and_serves_the_rest(hostile) -> None:
    repo, client = hostile
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "degraded"
    assert ready.json()["tables"] == sorted(repo.good)
    failed = ready.json()["failed"]
    assert set(failed) == set(repo.failed)
    for name, phrase in repo.failed.items():
        assert phrase in failed[name], (name, failed[name])
    for name, rows in repo.good.items():
        got = client.post(f"/v1/tables/{name}/lookup", json={"ids": [1, 2], "encoding": "base64"})
        assert got.status_code == 200, got.text
        vectors = np.frombuffer(base64.b64decode(got.json()["vectors"]), "<f4").reshape(2, -1)
        np.testing.assert_array_equal(vectors, rows[[1, 2]])


def test_configmap_table_serves_its_options_and_vocabulary(hostile) -> None:
    repo, client = hostile
    info = client.get("/v1/tables/cm").json()
    assert info["padding_idx"] == 0  # cm.toml, read through ..data
    response = client.post(
        "/v1/tables/cm/lookup", json={"keys": [repo.vocab[3]], "encoding": "base64"}
    )
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(
        np.frombuffer(base64.b64decode(response.json()["vectors"]), "<f4"), repo.good["cm"][3]
    )
    neighbours = client.post("/v1/tables/cm/neighbors", json={"ids": [3], "k": 5}).json()
    assert all(key in repo.vocab for key in neighbours["keys"][0])


def test_nothing_outside_is_ever_served(hostile) -> None:
    _, client = hostile
    for name in ("out_vocab", "out_file", "out_dir", "dotdot"):
        response = client.post(f"/v1/tables/{name}/neighbors", json={"ids": [1], "k": 3})
        assert response.status_code == 503
        assert not any(line in response.text for line in OUTSIDE_VOCAB)


ROUTES = [
    ("post", "/v1/tables/{t}/lookup", {"ids": [1]}),
    ("post", "/v1/tables/{t}/sequences", {"sequences": [[1]]}),
    ("post", "/v1/tables/{t}/bags", {"bags": [[1]]}),
    ("post", "/v1/tables/{t}/neighbors", {"ids": [1]}),
    ("get", "/v1/tables/{t}", None),
    ("post", "/v1/embeddings", {"model": "{t}", "input": [1]}),
]


@pytest.mark.parametrize("table", ["nan", "pad_bool", "notnpy", "out_file", "broken"])
@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[r[1] for r in ROUTES])
def test_failed_table_is_unavailable_not_missing(hostile, table, method, path, body) -> None:
    repo, client = hostile
    if body is not None:
        body = {k: (v.format(t=table) if isinstance(v, str) else v) for k, v in body.items()}
    response = client.request(method, path.format(t=table), json=body)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "table_unavailable"
    assert repo.failed[table] in error["detail"]["reason"]


@pytest.mark.parametrize("model", ["nan", "nan.sequences", "pad_bool"])
def test_v2_failed_model_is_unavailable_in_v2_shape(hostile, model) -> None:
    _, client = hostile
    infer = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1], "data": [1]}]}
    for response in (
        client.post(f"/v2/models/{model}/infer", json=infer),
        client.get(f"/v2/models/{model}"),
        client.get(f"/v2/models/{model}/ready"),
    ):
        assert response.status_code == 503, response.text
        assert isinstance(response.json()["error"], str)


def test_unknown_table_is_still_404(hostile) -> None:
    _, client = hostile
    response = client.post("/v1/tables/never_existed/lookup", json={"ids": [1]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "table_not_found"
